"""Names in the store, with one home for every rule about them.

* a **key** is a shared path as the catalog stores it: relative to the owning
  work's root, POSIX, normalized, never escaping the root;
* a ``lit://`` prefix marks a shared path in user code and is stripped;
* drive ``NAME``'s content put by work ``OWNER`` is the catalog work
  ``drive:NAME/OWNER``.

>>> normalize_key("lit://outputs//ckpt/")
'outputs/ckpt'
>>> split_drive_work(drive_work("shared", "root.a"))
('shared', 'root.a')
"""

from __future__ import annotations

import os
import posixpath

LIT_PREFIX = "lit://"
DRIVE_PREFIX = "drive:"


def strip_lit(text: str) -> str:
    """``text`` without a leading ``lit://`` (``"lit://"`` alone is the root, ``"."``)."""
    if text.startswith(LIT_PREFIX):
        return text[len(LIT_PREFIX) :] or "."
    return text


def check_text(what: str, text: str) -> str:
    """Refuse a name the catalog cannot hold: empty, NUL, or not valid UTF-8.

    A file name that is not valid UTF-8 reaches Python as text with surrogate
    escapes; such names cannot be catalog keys (they are stored byte-exactly
    only *inside* a snapshot), so they are refused here, named.

    >>> check_text("work name", "root.\\udcff")
    Traceback (most recent call last):
    ...
    ValueError: invalid work name 'root.\\udcff': not valid UTF-8
    """
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"invalid {what} {text!r}: empty or contains NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"invalid {what} {text!r}: not valid UTF-8") from None
    return text


def normalize_key(path: str | os.PathLike[str]) -> str:
    """The catalog key of a shared path: relative, POSIX, no ``..``.

    >>> normalize_key("./outputs//ckpt/")
    'outputs/ckpt'
    """
    text = strip_lit(os.fspath(path))
    check_text("shared path", text)
    if text.startswith("/"):
        raise ValueError(f"shared path {path!r} must be relative to the work's root")
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"shared path {path!r} escapes the work's root")
    return norm


def key_under(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """The key of ``path`` (absolute inside ``root``, or already relative to it).

    >>> key_under("/w", "/w/out/ckpt"), key_under("/w", "out")
    ('out/ckpt', 'out')
    """
    text = strip_lit(os.fspath(path))
    if os.path.isabs(text):
        base = os.fspath(root)
        rel = os.path.relpath(text, base)
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{text} lies outside the work root {base}")
        text = rel
    return normalize_key(text)


def check_work(work: str) -> str:
    """A valid work name (any non-empty UTF-8 text without NUL)."""
    return check_text("work name", work)


def ancestors(key: str) -> list[str]:
    """Proper ancestors of ``key``, deepest first.

    >>> ancestors("a/b/c")
    ['a/b', 'a']
    """
    out = []
    head = posixpath.dirname(key)
    while head:
        out.append(head)
        head = posixpath.dirname(head)
    return out


def parse_drive_id(id: object) -> str:
    """The name of drive ``lit://NAME``; ``ValueError`` for anything else."""
    bad = f"invalid drive id {id!r}: a drive id is 'lit://' followed by one name without '/'"
    if not isinstance(id, str) or not id.startswith(LIT_PREFIX):
        raise ValueError(bad)
    name = id[len(LIT_PREFIX) :]
    if not name or "/" in name or "\0" in name or name in (".", "..") or name != name.strip():
        raise ValueError(bad)
    return name


def drive_work(name: str, owner: str) -> str:
    """The catalog work that holds what ``owner`` put into drive ``name``.

    >>> drive_work("shared", "root.a")
    'drive:shared/root.a'
    """
    return f"{DRIVE_PREFIX}{name}/{owner}"


def split_drive_work(work: str) -> tuple[str, str] | None:
    """``(drive name, owner)`` of a drive's catalog work; ``None`` for a plain work."""
    if not work.startswith(DRIVE_PREFIX) or "/" not in work:
        return None
    name, owner = work[len(DRIVE_PREFIX) :].split("/", 1)
    return name, owner
