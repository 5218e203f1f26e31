"""Content-defined chunking of large files (FastCDC, compiled, via ``pyfastcdc``).

A cut point depends only on the bytes around it, so an insertion near the start
of a file moves the cut points nearby and leaves every later chunk unchanged.
Files of at most ``THRESHOLD`` bytes are stored whole.
"""

from __future__ import annotations

import functools
import io
import os
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from importlib.util import find_spec
from typing import Any, BinaryIO

AVG_SIZE = 512 * 1024
MIN_SIZE = AVG_SIZE // 4
MAX_SIZE = AVG_SIZE * 4
#: Files up to this size are one object; larger ones are chunked.
THRESHOLD = MAX_SIZE

# pyfastcdc is imported on the first large file, not with this module: it pulls in
# typing_extensions (~0.1 s), which commands that chunk nothing should not pay for.
CHUNKER = f"fastcdc2020-{AVG_SIZE}" if find_spec("pyfastcdc") else f"fixed-{AVG_SIZE}"


@functools.cache
def _fastcdc() -> Any:
    try:
        from pyfastcdc.cy import FastCDC
    except ImportError:  # pragma: no cover - only without a compiled wheel
        return None
    return FastCDC


#: Bytes each cutter reads and cuts at once (its window), plus ``MAX_SIZE`` more: a cut
#: needs ``MAX_SIZE`` bytes after the chunk's start (or the end of the stream).
WINDOW = 16 * 2**20
#: Threads cutting windows of one stream side by side. FastCDC is a C loop that
#: releases the GIL, so two cutters and the caller's hashing share both cores.
CUTTERS = 2
#: Windows in memory at once: the caller's, and one being cut by each cutter
#: (54 MiB, whatever the file's size).
BUFFERS = CUTTERS + 1


class Chunker:
    """Cuts streams into chunks, reusing its window buffers from one stream to the
    next: a snapshot of many large files allocates (and faults in) them once."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = max(window, 2 * MAX_SIZE)
        self._spare: list[bytearray] = []

    def chunks(self, stream: BinaryIO) -> Generator[memoryview, None, None]:
        """Split what is left of the seekable ``stream``; each view is valid until the
        next one (or the next stream this chunker cuts). At the end, ``stream`` stands
        after what was cut.

        The cut points are FastCDC's over the whole stream (pyfastcdc's ``cut_stream``
        gives the same). A stream longer than one window is cut by ``CUTTERS`` threads,
        each reading (``pread``) and cutting whole windows in turn while the caller
        hashes and stores the chunks. A window's cuts start at the window's first
        byte, which is seldom a true cut point; but FastCDC cuts the same from any
        point it shares with the true cuts, and it falls into step within a chunk or
        two. So the caller cuts from the true start, one chunk at a time, until it meets
        one of the window's cut points, and takes the window's cuts from there on (see
        ``_in_step``). Close the generator (``contextlib.closing``) when leaving it
        early: that stops the threads before ``stream`` is closed.
        """
        fastcdc = _fastcdc()
        if fastcdc is None:
            while block := stream.read(AVG_SIZE):
                yield memoryview(block)
            return
        base = stream.tell()
        left = stream.seek(0, os.SEEK_END) - base
        stream.seek(base)

        def cutter() -> Any:
            return fastcdc(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)

        size = self.window + MAX_SIZE
        buffers = self._spare or [bytearray(size) for _ in range(BUFFERS)]
        self._spare = []
        # A stream that fits one buffer is cut on the caller's thread: no thread to start.
        cutters = [cutter() for _ in range(CUTTERS)] if left >= size else []
        windows = _Windows(_positional_reader(stream), base, self.window, buffers, cutters)
        mine = cutter()
        at, consumed, k = 0, 0, 0  # the next chunk starts at ``at`` in window ``k``
        try:
            while True:
                buf, have, end, cuts = windows.get(k, mine)
                view = memoryview(buf)[:have]
                for start, length in _in_step(mine, view, at, end, self.window, cuts):
                    yield view[start : start + length]
                    at = start + length
                    consumed += length
                windows.release(buf)
                if end:
                    break
                at -= self.window
                k += 1
            stream.seek(base + consumed)
        finally:
            windows.close()
            self._spare = buffers


def chunks(stream: BinaryIO, window: int = WINDOW) -> Generator[memoryview, None, None]:
    """``Chunker(window).chunks(stream)``: one stream's chunks.

    >>> import io
    >>> sum(len(c) for c in chunks(io.BytesIO(bytes(3_000_000))))
    3000000
    """
    return Chunker(window).chunks(stream)


_Cuts = list[tuple[int, int]]
#: A cut window: its buffer, the bytes read into it, whether the stream ends in it,
#: and its cuts (offset, length) that start before the next window does.
_Window = tuple[bytearray, int, bool, _Cuts]


def _in_step(
    cutter: Any, view: memoryview, at: int, end: bool, window: int, cuts: _Cuts
) -> Iterator[tuple[int, int]]:
    """The true chunks of a window from ``at``, a true cut point: cut one at a time
    until ``at`` is one of the window's own cut points, then the window's cuts from
    there (FastCDC's cut from a point depends only on the ``MAX_SIZE`` bytes after
    it). Chunks starting at or after ``window`` belong to the next window, unless
    the stream ends in this one."""
    starts = {start: i for i, (start, _) in enumerate(cuts)}
    while at < len(view) and (end or at < window):
        i = starts.get(at)
        if i is not None:
            yield from cuts[i:]
            return
        length = next(iter(cutter.cut_buf(view[at : at + MAX_SIZE]))).length
        yield at, length
        at += length


def _positional_reader(stream: BinaryIO) -> Callable[[memoryview, int], int]:
    """``read_at(view, offset)``: fill ``view`` with the stream's bytes from ``offset``
    and return how many there were. A real file is read with ``preadv`` (threads read
    it at once, and its position is left alone); any other stream seeks and reads
    under a lock."""
    if isinstance(stream, (io.BufferedReader, io.BufferedRandom, io.FileIO)):
        fd = stream.fileno()

        def read_at(view: memoryview, offset: int) -> int:
            have = 0
            while have < len(view) and (n := os.preadv(fd, [view[have:]], offset + have)):
                have += n
            return have

        return read_at
    lock = threading.Lock()

    def read_at_locked(view: memoryview, offset: int) -> int:
        have = 0
        with lock:
            stream.seek(offset)
            while have < len(view) and (n := stream.readinto(view[have:])):  # type: ignore[attr-defined]
                have += n
        return have

    return read_at_locked


class _Windows:
    """Window ``k`` of a stream is its bytes from ``base + k * window``, ``MAX_SIZE``
    more than a window, with its cuts. Cutter threads take a free buffer, then claim
    the next window, read and cut it; with no cutters, ``get`` does it inline."""

    def __init__(
        self,
        read_at: Callable[[memoryview, int], int],
        base: int,
        window: int,
        buffers: list[bytearray],
        cutters: list[Any],
    ) -> None:
        self._read_at, self._base, self._window = read_at, base, window
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        for buf in buffers:
            self._free.put(buf)
        self._done = threading.Condition()
        self._ready: dict[int, _Window | BaseException] = {}
        self._next = 0  # the next window to claim
        self._last = sys.maxsize  # the window the stream ends in, once one is cut
        self._stop = False
        # A cutter takes a buffer *before* claiming a window, so the windows claimed
        # are always the earliest ones and the one the caller waits for has a buffer.
        self._threads = [
            threading.Thread(target=self._cut_in_turn, args=(c,), name="cas-cut", daemon=True)
            for c in cutters
        ]
        for thread in self._threads:
            thread.start()

    def get(self, k: int, cutter: Any) -> _Window:
        """Window ``k``, waiting for it to be cut; the caller releases its buffer."""
        if not self._threads:
            buf = self._free.get()
            assert buf is not None
            return self._cut(cutter, k, buf)
        with self._done:
            while k not in self._ready:
                self._done.wait()
            item = self._ready.pop(k)
        if isinstance(item, BaseException):
            raise item
        return item

    def release(self, buf: bytearray) -> None:
        self._free.put(buf)

    def _cut(self, cutter: Any, k: int, buf: bytearray) -> _Window:
        view = memoryview(buf)
        have = self._read_at(view, self._base + k * self._window)
        end = have < len(buf)
        cuts: _Cuts = []
        for chunk in cutter.cut_buf(view[:have]):
            if not end and chunk.offset >= self._window:
                break  # the next window's to cut; too few bytes here to know its end
            cuts.append((chunk.offset, chunk.length))
        return buf, have, end, cuts

    def _cut_in_turn(self, cutter: Any) -> None:
        while (buf := self._free.get()) is not None:
            with self._done:
                if self._stop or self._next > self._last:
                    self._free.put(buf)
                    return
                k = self._next
                self._next += 1
            item: _Window | BaseException
            try:
                item = self._cut(cutter, k, buf)
            except BaseException as exc:  # handed to the caller when it gets to window k
                item = exc
            with self._done:
                self._ready[k] = item
                if isinstance(item, BaseException) or item[2]:
                    self._last = min(self._last, k)
                self._done.notify_all()

    def close(self) -> None:
        """Stop cutting ahead and wait for the threads, so the stream is free again."""
        with self._done:
            self._stop = True
        for _ in self._threads:
            self._free.put(None)  # wakes a cutter waiting for a buffer
        for thread in self._threads:
            thread.join()
