"""Folder stamps: telling that a folder still holds a manifest without walking it.

A snapshot or checkout of a folder leaves a ``FolderStamp`` in the local state: the
manifest the folder held, the stat-cache record of its files, and the identity of
every folder in it. The next snapshot or checkout of the same kind checks that stamp
with one ``lstat`` per folder and file (``held_as_stamped``) and, when it holds, is
done: no listing, no manifest to decode or encode. A snapshot makes its stamp from
its walk (``snapshot.stamp_of_walk``); a checkout, from what it wrote, checked by a
listing of every folder (``stamp_of_checkout``).
"""

from __future__ import annotations

import os
import stat
import time

from .localstate import RACY_NS, FolderStamp, KnownFiles, identity, past_racy_window
from .manifest import DIR, SYMLINK, Manifest
from .tree import is_ours


def held_as_stamped(root: str, known: KnownFiles, stamp: FolderStamp) -> bool:
    """Whether folder ``root`` holds exactly the tree ``stamp`` was taken of (its
    ``manifest``), by one ``lstat`` per folder and file: no listing, no entries, no
    manifest to decode or encode.

    Every folder must have its stamped identity, and not have changed within the racy
    window before the stamp was taken (a name added, removed or renamed in it would
    have moved its mtime; a chmod, its ctime), and every file must be as the stat-cache
    record the stamp was taken with vouches (``KnownFiles.all_match``). Then the
    names are the stamped ones and the files' content, mode and size the recorded ones:
    the manifest. False means only "cannot tell this way"; a walk then decides.
    """
    if known.record != stamp.tree or known.root != root or len(known) != stamp.files:
        return False
    walked = stamp.walked_ns
    prefix = root + "/"
    try:
        for rel, want in stamp.folders:
            st = os.lstat(prefix + rel) if rel else os.stat(root)  # as walk and survey did
            if identity(st) != want or not past_racy_window(st.st_mtime_ns, st.st_ctime_ns, walked):
                return False
    except OSError:
        return False
    return known.all_match()


def wait_out_racy_window() -> None:
    """Sleep until what was written up to now is past the racy window (``RACY_NS``,
    10 ms, and 1 ms more so that "before" is strict): records and stamps taken after
    that vouch for it."""
    time.sleep((RACY_NS + 1_000_000) / 1e9)


def stamp_of_checkout(
    root: str, manifest: Manifest, digest: str, tree: str | None
) -> FolderStamp | None:
    """The stamp of folder ``root`` as a checkout left it holding ``manifest``
    (``digest``), its files recorded in the stat-cache record ``tree``.

    A checkout knows what it wrote, but not what anyone else did meanwhile, so every
    folder is checked as a snapshot's walk would see it: its identity first, then its
    listing, which must name exactly the manifest's entries in it, with its mode and
    its links' targets. A change after a folder's ``lstat`` moves its identity, so the
    stamp no longer holds; one before it shows in the listing, and there is no stamp.
    ``None`` too when a folder changed within the racy window (``wait_out_racy_window``
    first, for a tree just written) or there is no record.
    """
    if tree is None or manifest.kind != DIR:
        return None
    walked_ns = time.time_ns()
    names: dict[str, set[str]] = {"": set()}  # each folder's entries
    modes: dict[str, int] = {}
    links: list[tuple[str, str]] = []
    for entry in manifest.entries:
        parent, _, name = entry.path.rpartition("/")
        names.setdefault(parent, set()).add(name)
        if entry.type == DIR:
            names.setdefault(entry.path, set())
            modes[entry.path] = stat.S_IFDIR | entry.mode
        elif entry.type == SYMLINK:
            links.append((entry.path, entry.target))
    folders = []
    try:
        for rel, want in names.items():
            full = f"{root}/{rel}" if rel else root
            st = os.lstat(full) if rel else os.stat(root)
            if not stat.S_ISDIR(st.st_mode) or (rel and st.st_mode != modes[rel]):
                return None
            if not past_racy_window(st.st_mtime_ns, st.st_ctime_ns, walked_ns):
                return None
            if {name for name in os.listdir(full) if not is_ours(name)} != want:
                return None  # listed after its lstat: a change before that shows here
            folders.append((rel, identity(st)))
        for rel, target in links:
            if os.readlink(f"{root}/{rel}") != target:
                return None
    except OSError:
        return None
    return FolderStamp(tree, digest, len(manifest.files), walked_ns, tuple(folders), "checkout")
