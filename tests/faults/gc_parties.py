"""The parties of the gc race, shared by the local (``test_gc_race``) and S3 (``test_s3_gc``)
versions: module-level functions, so spawned processes can import them.

Each process keeps one ``Store`` per state file across rounds, as a long-lived work would.
"""

from __future__ import annotations

import pathlib

from cas_storage import Store
from cas_storage.packs import PACK_MIN_OBJECTS
from faults.faultkit import read_files, tree_for, write_exact

WORK, PATH = "root.train", "ckpt"
_open: dict[str, Store] = {}


def open_store(url: str, state: str) -> Store:
    if state not in _open:
        _open[state] = Store.open(url, state=state)
    return _open[state]


def reuser(r: int, url: str, state: str, src: str) -> tuple[str, dict[str, bytes]]:
    """Snapshot a folder whose big file never changes and whose small one does every other
    round (so the odd rounds are "unchanged → the latest version")."""
    source = pathlib.Path(src)
    if r % 2 == 0:
        (source / "step.txt").write_text(f"reuser step {r}")
    v = open_store(url, state).snapshot(WORK, PATH, source)
    return v.manifest, read_files(source)


def cycler(r: int, url: str, state: str, src: str) -> tuple[str, dict[str, bytes]]:
    """Snapshot content of an older version (one of three trees in turn) again: the objects
    it needs are ones a gc may just have freed — or moved, repacking the pack they share
    (each tree has enough files to be stored in a pack; the reuser's are loose)."""
    source = pathlib.Path(src)
    write_exact(source, tree_for(f"older {r % 3}", many=PACK_MIN_OBJECTS + 4))
    v = open_store(url, state).snapshot(WORK, PATH, source)
    return v.manifest, read_files(source)
