"""Sizes for people: ``1.5 GiB`` in human output (``--json`` keeps exact bytes)."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(nbytes: int) -> str:
    """``nbytes`` in binary units, three significant digits.

    >>> human_size(0), human_size(1023), human_size(1536), human_size(3 * 2**30)
    ('0 B', '1023 B', '1.5 KiB', '3.0 GiB')
    >>> human_size(123_456_789)
    '118 MiB'
    """
    if nbytes < 1024:
        return f"{nbytes} B"
    size = float(nbytes)
    for unit in _UNITS:
        size /= 1024
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:.1f} {unit}" if size < 100 else f"{size:.0f} {unit}"
    raise AssertionError("unreachable")
