"""Walking a local folder into ``{relative POSIX path: lstat}`` without following links."""

from __future__ import annotations

import os
import stat


def walk(root: str) -> dict[str, os.stat_result]:
    """Every file, folder and link below ``root`` (not ``root`` itself), parents first.

    >>> walk("/nonexistent-cas-folder")
    {}
    """
    found: dict[str, os.stat_result] = {}
    pending = [("", root)]
    while pending:
        rel_dir, abs_dir = pending.pop()
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed, or replaced by a file, since its parent was listed
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing
            found[rel] = st
            if stat.S_ISDIR(st.st_mode):
                pending.append((rel, entry.path))
    return found


def kind(st: os.stat_result) -> str:
    """``file``, ``dir``, ``symlink`` or ``other`` (sockets, devices, fifos)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"
