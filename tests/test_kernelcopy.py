"""Kernel copies on checkout: reflink, copy_file_range and the plain fallback give the same
bytes, and every one of them is verified (a damaged object is still named, never written)."""

from __future__ import annotations

import errno
import itertools
import os

import pytest
from conftest import read_tree, write_tree

from cas_storage import CorruptObject, kernelcopy
from cas_storage.checkout import KERNEL_COPY_MIN, _Writer

BIG = os.urandom(5 * 1024 * 1024)  # chunked
WHOLE = os.urandom(KERNEL_COPY_MIN + 12345)  # one object, above the kernel-copy size


def _tree(tmp_path):
    return write_tree(tmp_path / "src", {"big.bin": BIG, "whole.bin": WHOLE, "small": "s"})


def _refuse(*args, **kwargs):
    raise AssertionError("the kernel-copy path should have written this file")


def test_large_files_are_copied_in_the_kernel_and_verified(store, tmp_path, monkeypatch):
    src = _tree(tmp_path)
    store.snapshot("w", "p", src)
    calls = []
    real = kernelcopy.copy_range
    monkeypatch.setattr(kernelcopy, "copy_range", lambda *a: calls.append(a) or real(*a))
    # Files above the threshold never go through the Python copy loop.
    real_verified = _Writer._copy_verified
    monkeypatch.setattr(
        _Writer,
        "_copy_verified",
        lambda self, out, entry: (
            _refuse() if entry.size >= KERNEL_COPY_MIN else real_verified(self, out, entry)
        ),
    )
    store.checkout("w", "p", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert calls  # copy_file_range (or its fallback) did the work


def test_clone_is_refused_cleanly_where_reflinks_are_unsupported(tmp_path):
    # This machine's ext4 has no reflinks: clone says so and the copy path takes over.
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 10000)
    with open(a, "rb") as src, open(b, "wb") as dst:
        cloned = kernelcopy.clone(src.fileno(), dst.fileno())
    assert cloned in (True, False)
    assert not cloned or b.read_bytes() == a.read_bytes()


def test_without_copy_file_range_the_plain_copy_gives_the_same_bytes(store, tmp_path, monkeypatch):
    src = _tree(tmp_path)
    store.snapshot("w", "p", src)

    def unsupported(*args):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(kernelcopy, "_copy_file_range", unsupported)
    store.checkout("w", "p", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)


def test_a_reflink_filesystem_clones_whole_objects(store, tmp_path, monkeypatch):
    # Without big.bin: its random content is cut into 4-14 chunks, and with 14 the
    # batch reaches PACK_MIN_OBJECTS and packs whole.bin too (a pack range is copied,
    # never cloned). Two objects are always stored loose.
    src = write_tree(tmp_path / "src", {"whole.bin": WHOLE, "small": "s"})
    store.snapshot("w", "p", src)
    cloned = []

    def fake_ficlone(dst_fd, request, src_fd):  # what FICLONE does, by hand
        assert request == kernelcopy.FICLONE
        size = os.fstat(src_fd).st_size
        os.pwrite(dst_fd, os.pread(src_fd, size, 0), 0)
        cloned.append(size)

    monkeypatch.setattr(kernelcopy, "_ioctl", fake_ficlone)
    store.checkout("w", "p", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert cloned == [len(WHOLE)]


@pytest.mark.parametrize("victim", ["big.bin", "whole.bin"])
def test_a_damaged_object_is_still_named_and_never_written(store, tmp_path, victim):
    src = _tree(tmp_path)
    store.snapshot("w", "p", src)
    entry = store.manifest(store.version("w", "p")).by_path()[victim]
    damaged = entry.objects()[-1]
    path, offset, _ = store.objects.locate(damaged)  # loose, or packed if cut finely
    os.chmod(path, 0o644)
    with open(path, "r+b") as obj:  # same size, one byte flipped: only a hash can tell
        obj.seek(offset)
        first = obj.read(1)
        obj.seek(offset)
        obj.write(bytes([first[0] ^ 1]))
    with pytest.raises(CorruptObject) as caught:
        store.checkout("w", "p", tmp_path / "out")
    assert damaged in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_copy_range_stops_at_the_end_of_the_source(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"0123456789")
    with open(a, "rb") as src, open(b, "w+b") as dst:
        assert kernelcopy.copy_range(src.fileno(), dst.fileno(), 100, 4, 0) == 6
    assert b.read_bytes() == b"456789"


def test_copy_range_starts_its_kernel_copies_on_64k_boundaries(tmp_path, monkeypatch):
    """Pieces of any length at any offset: the same bytes, and every call after a
    piece's first starts on a SPLICE_ALIGN boundary of the destination."""
    data = os.urandom(3 * 2**20)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    calls = []
    real = kernelcopy._copy_file_range
    assert real is not None

    def recorded(src, dst, count, src_offset, dst_offset):
        calls.append((dst_offset, count))
        return real(src, dst, count, src_offset, dst_offset)

    monkeypatch.setattr(kernelcopy, "_copy_file_range", recorded)
    cuts = [0, 1, 4095, 70_000, 65536 * 5, 1_000_003, 2_500_000, len(data)]
    with open(a, "rb") as src, open(b, "w+b") as dst:
        for start, end in itertools.pairwise(cuts):
            calls.clear()
            assert kernelcopy.copy_range(src.fileno(), dst.fileno(), end - start, start, start) == (
                end - start
            )
            assert calls[0][0] == start
            assert all(at % kernelcopy.SPLICE_ALIGN == 0 for at, _ in calls[1:])
            boundary = -(-start // kernelcopy.SPLICE_ALIGN) * kernelcopy.SPLICE_ALIGN
            if start < boundary < end:  # the first call stops at the boundary
                assert calls[0][0] + calls[0][1] == boundary
    assert b.read_bytes() == data
