"""Content-defined chunking of large files (FastCDC, compiled, via ``pyfastcdc``).

A cut point depends only on the bytes around it, so an insertion near the start
of a file moves the cut points nearby and leaves every later chunk unchanged.
Files of at most ``THRESHOLD`` bytes are stored whole.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Generator, Iterator
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


#: Bytes read at once. A cut needs ``MAX_SIZE`` bytes after the chunk's start (or the
#: end of the file), so the unread tail is moved once per window, not once per chunk.
WINDOW = 16 * 2**20
#: Windows in memory at once: the caller's, the one read ahead, and one more so the
#: reader need not wait for the caller to finish (48 MiB, whatever the file's size).
BUFFERS = 3


class Chunker:
    """Cuts streams into chunks, reusing its window buffers from one stream to the
    next: a snapshot of many large files allocates (and faults in) them once."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = max(window, 2 * MAX_SIZE)
        self._spare: list[bytearray] = []

    def chunks(self, stream: BinaryIO) -> Generator[memoryview, None, None]:
        """Split what is left of ``stream``; each view is valid until the next one (or
        the next stream this chunker cuts).

        The cut points are FastCDC's over the whole stream (pyfastcdc's ``cut_stream``
        gives the same), found window by window: pyfastcdc's stream reader moves up to
        ``MAX_SIZE`` bytes after every chunk, which cost more than the cutting. A thread
        reads and cuts the next windows while the caller hashes and stores this one:
        the read, the cut and the hash are C loops that release the GIL, so a large
        file is taken in on two cores. Close the generator (``contextlib.closing``)
        when leaving it early: that stops the thread before ``stream`` is closed.
        """
        fastcdc = _fastcdc()
        if fastcdc is None:
            while block := stream.read(AVG_SIZE):
                yield memoryview(block)
            return
        cutter = fastcdc(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
        buffers = self._spare or [bytearray(self.window) for _ in range(BUFFERS)]
        self._spare = []
        windows = _Windows(stream, cutter, buffers)
        try:
            for view, cuts in windows:
                for start, length in cuts:
                    yield view[start : start + length]
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


class _Windows:
    """The windows of a stream with their cut points, read and cut on a thread of its
    own; the buffers circulate between that thread and the iterating one."""

    def __init__(self, stream: BinaryIO, cutter: Any, buffers: list[bytearray]) -> None:
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        for buf in buffers:
            self._free.put(buf)
        # Unbounded, yet never longer than BUFFERS: each entry holds a buffer.
        self._ready: queue.SimpleQueue[tuple[bytearray, _Cuts] | BaseException | None] = (
            queue.SimpleQueue()
        )
        self._stop = False
        self._thread = threading.Thread(
            target=self._read, args=(stream, cutter), name="cas-chunk", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[memoryview, _Cuts]]:
        held: bytearray | None = None
        while True:
            item = self._ready.get()
            if held is not None:
                self._free.put(held)  # asking for the next window ends use of the last
                held = None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            held, cuts = item
            yield memoryview(held), cuts

    def _read(self, stream: BinaryIO, cutter: Any) -> None:
        try:
            last, rest, eof = memoryview(b""), 0, False
            while (buf := self._free.get()) is not None and not self._stop:
                view = memoryview(buf)
                # The uncut tail of the last window starts this one. The caller still
                # holds that window but reads only what was cut, never its tail.
                view[:rest] = last[len(last) - rest :]
                have = rest
                while not eof and have < len(buf):
                    n = stream.readinto(view[have:])  # type: ignore[attr-defined]
                    if not n:
                        eof = True
                    else:
                        have += n
                if have == 0:
                    break
                cuts: _Cuts = []
                rest = 0
                for chunk in cutter.cut_buf(view[:have]):
                    if not eof and have - chunk.offset < MAX_SIZE:
                        rest = have - chunk.offset  # too little after it to know its end
                        break
                    cuts.append((chunk.offset, chunk.length))
                last = view[:have]
                self._ready.put((buf, cuts))
                if eof:
                    break
        except BaseException as exc:  # handed to the iterating thread
            self._ready.put(exc)
            return
        self._ready.put(None)

    def close(self) -> None:
        """Stop reading ahead and wait for the thread, so the stream is free again."""
        self._stop = True
        self._free.put(None)  # wakes a reader waiting for a buffer
        self._thread.join()
