"""Shared helpers of the fault suite: deterministic trees and a whole-store check.

``verify_store`` is the suite's independent judge of a store: it re-hashes every
object a manifest references and checks every version out, using only public
calls plus the store's object reads (objects lie in packs or loose files).
"""

from __future__ import annotations

import os
import pathlib
import random

from cas_storage import Store
from cas_storage.hashing import digest_bytes
from cas_storage.manifest import Manifest
from cas_storage.packs import PACK_MIN_OBJECTS


def tree_for(seed: str, many: int = 0) -> dict[str, bytes]:
    """A small tree whose every byte follows from ``seed`` (``seed.txt`` names it).

    About one tree in four also holds a file large enough to be chunked. ``many``
    adds that many small files (``many/``): enough of them and a snapshot stores
    its objects in a pack instead of loose files (``packs.PACK_MIN_OBJECTS``).
    """
    rng = random.Random(seed)
    big = rng.random() < 0.25
    files = {"seed.txt": seed.encode()}
    for i in range(rng.randint(1, 5)):
        folder = rng.choice(["", "a/", "a/b/", "c/"])
        files[f"{folder}f{i}.bin"] = rng.randbytes(rng.randint(0, 20_000)) + seed.encode()
    if big:
        files["big/weights.bin"] = rng.randbytes(2_500_000) + seed.encode()
    for i in range(many):
        files[f"many/m{i}.bin"] = rng.randbytes(rng.randint(1, 3_000)) + seed.encode()
    return files


def mixed_tree(seed: str) -> dict[str, bytes]:
    """``tree_for(seed)``; for half of the seeds with enough files to be stored in a pack."""
    packed = random.Random(f"packed {seed}").random() < 0.5
    return tree_for(seed, many=PACK_MIN_OBJECTS + 4 if packed else 0)


def write_exact(root: pathlib.Path, files: dict[str, bytes]) -> None:
    """Make ``root`` hold exactly ``files``: write them, delete every other file."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = pathlib.Path(dirpath, name)
            if full.relative_to(root).as_posix() not in files:
                full.unlink()
    for rel, data in files.items():
        full = root / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)


def read_files(root: pathlib.Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file below ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = pathlib.Path(dirpath, name)
            if full.is_file() and not full.is_symlink():
                out[full.relative_to(root).as_posix()] = full.read_bytes()
    return out


def verify_objects(store: Store) -> int:
    """Every object every manifest of every version needs exists and hashes right.

    Read through a freshly loaded pack index (objects lie in packs or loose files).
    Returns how many distinct objects were checked; raises ``AssertionError`` naming
    the first damaged one.
    """
    checked: set[str] = set()
    store.objects.refresh_packs()
    for version in store.catalog.all_versions():
        raw = store.objects.read(version.manifest, verify=False)
        assert digest_bytes(raw) == version.manifest, f"manifest of {version} is damaged"
        manifest = Manifest.decode(raw)
        for digest in manifest.objects() - checked:
            try:
                data = store.objects.read(digest, verify=False)
            except FileNotFoundError:
                raise AssertionError(
                    f"{version.work}:{version.path} v{version.number}: {digest} lost"
                ) from None
            assert digest_bytes(data) == digest, f"object {digest} is damaged"
            checked.add(digest)
        checked.add(version.manifest)
    return len(checked)


def all_temp_files(root: pathlib.Path) -> list[str]:
    """Every leftover temp name (objects' ``.tmp-``, checkouts' ``.cas-tmp-``) under root."""
    found = []
    for dirpath, dirs, names in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirs + names if ".tmp-" in n]
    return found
