"""Content-defined chunking of large files (FastCDC, compiled, via ``pyfastcdc``).

A cut point depends only on the bytes around it, so an insertion near the start
of a file moves the cut points nearby and leaves every later chunk unchanged.
Files of at most ``THRESHOLD`` bytes are stored whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

AVG_SIZE = 512 * 1024
MIN_SIZE = AVG_SIZE // 4
MAX_SIZE = AVG_SIZE * 4
#: Files up to this size are one object; larger ones are chunked.
THRESHOLD = MAX_SIZE

try:
    from pyfastcdc.cy import FastCDC as _FastCDC

    CHUNKER = f"fastcdc2020-{AVG_SIZE}"
except ImportError:  # pragma: no cover - only without a compiled wheel
    _FastCDC = None
    CHUNKER = f"fixed-{AVG_SIZE}"


def chunks(stream: BinaryIO) -> Iterator[memoryview]:
    """Split what is left of ``stream`` into chunks; each view is valid until the next.

    >>> import io
    >>> sum(len(c) for c in chunks(io.BytesIO(bytes(3_000_000))))
    3000000
    """
    if _FastCDC is None:
        while block := stream.read(AVG_SIZE):
            yield memoryview(block)
        return
    cutter = _FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
    for chunk in cutter.cut_stream(stream):
        yield chunk.data
