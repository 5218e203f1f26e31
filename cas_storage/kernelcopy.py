"""Copying bytes from file to file without passing them through Python.

A checkout from a local store assembles each large file from object files and
from chunks of the files already at the destination. ``cp`` does this in the
kernel; so do we: ``FICLONE`` shares the blocks where the filesystem can (btrfs,
XFS), ``os.copy_file_range`` copies in the kernel everywhere else on Linux, and a
plain ``pread``/``pwrite`` loop covers what neither supports (another OS, two
filesystems, a tmpfs of an old kernel). The bytes are then verified by hashing the
written file once (``digest_fd``) — one read where the Python path reads, hashes
twice and writes.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable

from .hashing import BLOCK_SIZE, Hasher

#: Files at least this large are assembled by kernel copies (a checkout's); below it
#: the system calls of a copy and a re-read cost more than passing bytes through Python.
KERNEL_COPY_MIN = 1024 * 1024
#: ``ioctl(dest, FICLONE, src)``: make ``dest`` share every block of ``src``.
FICLONE = 0x40049409
#: What a filesystem or kernel answers when it cannot do a kernel copy or a clone.
_UNSUPPORTED = {
    errno.EXDEV,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.ENOTTY,
    errno.EINVAL,
    errno.EBADF,
    errno.ETXTBSY,
    errno.EPERM,
}

_copy_file_range: Callable[[int, int, int, int, int], int] | None = getattr(
    os, "copy_file_range", None
)
_ioctl: Callable[[int, int, int], object] = fcntl.ioctl


def clone(src_fd: int, dst_fd: int) -> bool:
    """Make ``dst_fd`` a reflink copy of all of ``src_fd``; ``False`` when unsupported.

    On ext4 (no reflinks) this is always ``False`` and costs one failed system call.
    """
    try:
        _ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise
    return True


#: Kernel copies start at destination offsets that are multiples of this (one short copy
#: first when the range does not). Linux moves a ``copy_file_range`` between files of one
#: ext4 through a pipe, 16 pages (64 KiB) per write from the call's starting offset: a
#: call starting elsewhere made every write straddle page-cache folios, and a GiB in
#: pieces of random sizes took 0.37 s against 0.28 s (``benchmarks/bench_kernelcopy.py``).
#: Page-congruent sources (``packs.ALIGN``) are what keeps the pages whole on both sides.
SPLICE_ALIGN = 64 * 1024


def copy_range(src_fd: int, dst_fd: int, count: int, src_offset: int, dst_offset: int) -> int:
    """Copy ``count`` bytes between offsets; return how many (fewer only at ``src`` EOF)."""
    done = 0
    while done < count:
        n = 0
        if _copy_file_range is not None:
            at = dst_offset + done
            step = count - done
            if head := -at % SPLICE_ALIGN:
                step = min(step, head)  # up to the next 64 KiB boundary (SPLICE_ALIGN)
            try:
                n = _copy_file_range(src_fd, dst_fd, step, src_offset + done, at)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                return done + _copy_by_hand(
                    src_fd, dst_fd, count - done, src_offset + done, dst_offset + done
                )
        else:
            return _copy_by_hand(src_fd, dst_fd, count, src_offset, dst_offset)
        if n == 0:
            break  # end of the source: the caller decides what a short copy means
        done += n
    return done


def _copy_by_hand(src_fd: int, dst_fd: int, count: int, src_offset: int, dst_offset: int) -> int:
    done = 0
    while done < count:
        block = os.pread(src_fd, min(BLOCK_SIZE, count - done), src_offset + done)
        if not block:
            break
        written = 0
        while written < len(block):
            written += os.pwrite(dst_fd, block[written:], dst_offset + done + written)
        done += len(block)
    return done


def hash_range(
    fd: int, hasher: Hasher, offset: int, count: int, buffer: bytearray | None = None
) -> int:
    """Feed ``count`` bytes of ``fd`` from ``offset`` to ``hasher``; return how many there were.

    Pass ``buffer`` when calling piece after piece: a fresh one per call is zeroed and
    faulted in each time, which costs as much as the read.
    """
    if buffer is None:
        buffer = bytearray(min(BLOCK_SIZE, max(count, 1)))
    view = memoryview(buffer)
    done = 0
    while done < count:
        n = os.preadv(fd, [view[: min(len(buffer), count - done)]], offset + done)
        if n == 0:
            break
        hasher.update(view[:n])
        done += n
    return done


def digest_fd(fd: int, size: int, buffer: bytearray | None = None) -> tuple[str, int]:
    """Digest of the first ``size`` bytes of ``fd`` and how many it had (positional reads)."""
    hasher = Hasher()
    length = hash_range(fd, hasher, 0, size, buffer)
    return hasher.hexdigest(), length
