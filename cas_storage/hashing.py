"""xxh3-128 digests of bytes, streams and files.

A digest is the 32-character lowercase hex form of xxh3-128. Everything in the
store is named by one.
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO

import xxhash

#: Read size for streaming: large enough that syscall overhead is noise.
BLOCK_SIZE = 4 * 1024 * 1024
DIGEST_LENGTH = 32
# A regex, not a per-character loop: every manifest entry is checked on every decode.
_DIGEST = re.compile(f"[0-9a-f]{{{DIGEST_LENGTH}}}")

Hasher = xxhash.xxh3_128


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """Digest of an in-memory buffer.

    >>> digest_bytes(b"")
    '99aa06d3014798d86001c324468d497f'
    """
    return xxhash.xxh3_128_hexdigest(data)


def digest_stream(stream: BinaryIO) -> tuple[str, int]:
    """Digest and length of everything left in ``stream``, read in large blocks.

    >>> import io
    >>> digest_stream(io.BytesIO(b"abc"))[1]
    3
    """
    hasher = Hasher()
    size = 0
    while block := stream.read(BLOCK_SIZE):
        hasher.update(block)
        size += len(block)
    return hasher.hexdigest(), size


def digest_file(path: str | os.PathLike[str]) -> str:
    """Digest of a file's content, streamed.

    >>> digest_file("/dev/null")
    '99aa06d3014798d86001c324468d497f'
    """
    with open(path, "rb") as stream:
        return digest_stream(stream)[0]


def is_digest(text: str) -> bool:
    """True when ``text`` is a full digest (32 lowercase hex characters).

    >>> is_digest("99aa06d3014798d86001c324468d497f"), is_digest("99AA" + "0" * 28)
    (True, False)
    """
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None
