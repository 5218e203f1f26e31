"""Status: what differs between a local file or folder and a stored version.

Like ``git status``: nothing is stored and nothing in the store changes. A file
the stat cache vouches for is not read; one whose size differs from the stored
entry is changed without reading; only the rest is hashed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import not_found
from .hashing import digest_file
from .localstate import LocalState
from .manifest import (
    DIR,
    FILE,
    SYMLINK,
    Diff,
    Manifest,
    file_mode_bits,
    link_stays_inside,
)
from .manifest import mode_bits as dir_mode_bits
from .tree import kind, walk


@dataclass(frozen=True)
class StatusReport:
    """``diff`` (stored → local) plus how many local files had to be read to know it."""

    diff: Diff
    files_read: int
    bytes_read: int


def status(stored: Manifest, state: LocalState, source: str) -> StatusReport:
    """Compare the local ``source`` with the ``stored`` manifest, paths added locally first.

    >>> import tempfile, os
    >>> from cas_storage.localstate import LocalState
    >>> root = tempfile.mkdtemp()
    >>> _ = open(os.path.join(root, "a.txt"), "w").write("hi")
    >>> state = LocalState(os.path.join(tempfile.mkdtemp(), "state.db"))
    >>> status(Manifest.build("dir", []), state, root).diff.added
    ['a.txt']
    """
    source = os.path.abspath(source)
    try:
        top = os.lstat(source)
    except FileNotFoundError:
        raise FileNotFoundError(not_found(source)) from None
    if stat.S_ISREG(top.st_mode):
        found = {".": top}
    elif stat.S_ISDIR(top.st_mode):
        found = walk(source)
    else:
        raise ValueError(f"cannot compare {source}: not a file or folder")
    known = state.under(source)
    before = {e.path: e for e in stored.entries}
    added, changed, seen = [], [], set()
    files_read = bytes_read = 0
    for rel, st in found.items():
        full = source if rel == "." else os.path.join(source, rel)
        what = kind(st)
        old = before.get(rel)
        if what == "symlink" and not link_stays_inside(rel, os.readlink(full)):
            continue  # a snapshot would skip it too
        if what not in (FILE, DIR, SYMLINK):
            continue
        seen.add(rel)
        if old is None:
            added.append(rel)
            continue
        if old.type != what:
            changed.append(rel)
        elif what == DIR:
            if old.mode != dir_mode_bits(st.st_mode):
                changed.append(rel)
        elif what == SYMLINK:
            if old.target != os.readlink(full):
                changed.append(rel)
        elif old.mode != file_mode_bits(st.st_mode) or old.size != st.st_size:
            changed.append(rel)
        else:
            cached = known.get(full)
            if cached is not None and cached.matches(st):
                digest = cached.digest
            else:
                digest = digest_file(full)
                files_read += 1
                bytes_read += st.st_size
            if digest != old.digest:
                changed.append(rel)
    removed = [p for p in before if p not in seen]
    diff = Diff(sorted(added), sorted(removed), sorted(changed))
    return StatusReport(diff, files_read, bytes_read)
