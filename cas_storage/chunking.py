"""Content-defined chunking of large files (FastCDC, compiled, via ``pyfastcdc``).

A cut point depends only on the bytes around it, so an insertion near the start
of a file moves the cut points nearby and leaves every later chunk unchanged.
Files of at most ``THRESHOLD`` bytes are stored whole.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
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


def chunks(stream: BinaryIO, window: int = WINDOW) -> Iterator[memoryview]:
    """Split what is left of ``stream`` into chunks; each view is valid until the next.

    The cut points are FastCDC's over the whole stream (pyfastcdc's ``cut_stream``
    gives the same), found window by window: pyfastcdc's stream reader moves up to
    ``MAX_SIZE`` bytes after every chunk, which cost more than the cutting.

    >>> import io
    >>> sum(len(c) for c in chunks(io.BytesIO(bytes(3_000_000))))
    3000000
    """
    fastcdc = _fastcdc()
    if fastcdc is None:
        while block := stream.read(AVG_SIZE):
            yield memoryview(block)
        return
    cutter = fastcdc(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
    buf = bytearray(max(window, 2 * MAX_SIZE))
    view = memoryview(buf)
    have, eof = 0, False
    while True:
        while not eof and have < len(buf):
            n = stream.readinto(view[have:])  # type: ignore[attr-defined]
            if not n:
                eof = True
            else:
                have += n
        if have == 0:
            return
        rest = 0
        for chunk in cutter.cut_buf(view[:have]):
            if not eof and have - chunk.offset < MAX_SIZE:
                rest = have - chunk.offset  # too little after it to know its end: next window
                break
            yield chunk.data
        if rest == 0 and eof:
            return
        buf[:rest] = buf[have - rest : have]
        have = rest
