"""Guarantee 3: damage in the store is detected, named, and never spread.

Extends ``tests/test_store.py::test_corrupt_object_never_reaches_destination``
(a flipped byte of a whole-file object) to truncated, missing and chunk objects,
damaged manifests, single-file checkouts, and overwrites of existing folders,
where a failed checkout must leave the destination exactly as it was.
"""

from __future__ import annotations

import os
import pathlib

import pytest
from conftest import write_tree

from cas_storage import Store
from cas_storage.errors import CorruptObject, MissingObject
from faults.faultkit import all_temp_files, read_files


def _flip(path: str) -> None:
    os.chmod(path, 0o644)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    pathlib.Path(path).write_bytes(bytes(data))


def _truncate(path: str) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


DAMAGE = {"flipped byte": _flip, "truncated": _truncate, "missing": os.unlink}
BIG = os.urandom(3_000_000)  # chunked: several objects


def _setup(store: Store, tmp_path: pathlib.Path) -> tuple[dict, dict]:
    old = {"a.txt": b"old a", "sub/b.bin": b"old b" * 100, "big.bin": BIG[:2_000_000]}
    new = {"a.txt": b"new a!", "sub/b.bin": b"new b" * 100, "big.bin": BIG, "sub/c": b"c"}
    store.snapshot("w", "p", write_tree(tmp_path / "v1", old))
    store.snapshot("w", "p", write_tree(tmp_path / "v2", new))
    return old, new


def _objects_of(store: Store, rel: str) -> list[str]:
    entry = store.manifest(store.version("w", "p")).by_path()[rel]
    return entry.objects()


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("victim", ["sub/b.bin", "big.bin"])
def test_damaged_object_is_named_and_destination_untouched(store, tmp_path, damage, victim):
    old, new = _setup(store, tmp_path)
    store.checkout("w", "p", tmp_path / "dest", version=1)
    digests = _objects_of(store, victim)
    target = digests[-1]  # for the chunked file, a chunk the old version lacks
    DAMAGE[damage](store.objects.path(target))
    expected = MissingObject if damage == "missing" else CorruptObject
    for dest, overwrite in ((tmp_path / "fresh", False), (tmp_path / "dest", True)):
        with pytest.raises(expected) as caught:
            store.checkout("w", "p", dest, overwrite=overwrite)
        message = str(caught.value)
        assert target in message and victim in message and "w:p version 2" in message
        assert all_temp_files(tmp_path / "dest") == [] and not (tmp_path / "fresh").exists()
        # The destination is still exactly version 1: no file of version 2 was swapped in
        # before the damage was found, so it is never a mix of two versions.
        assert read_files(tmp_path / "dest") == old
    assert not [n for n in os.listdir(tmp_path) if "cas-tmp" in n]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_single_file_checkout_keeps_the_old_file(store, tmp_path, damage):
    (tmp_path / "m.pt").write_bytes(b"old weights")
    store.snapshot("w", "m.pt", tmp_path / "m.pt")
    store.checkout("w", "m.pt", tmp_path / "out" / "m.pt")
    (tmp_path / "m.pt").write_bytes(b"new weights")
    store.snapshot("w", "m.pt", tmp_path / "m.pt")
    digest = store.manifest(store.version("w", "m.pt")).entries[0].digest
    DAMAGE[damage](store.objects.path(digest))
    with pytest.raises((CorruptObject, MissingObject), match=digest):
        store.checkout("w", "m.pt", tmp_path / "out" / "m.pt", overwrite=True)
    assert os.listdir(tmp_path / "out") == ["m.pt"]
    assert (tmp_path / "out" / "m.pt").read_bytes() == b"old weights"


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_manifest_is_named_with_its_version(store, tmp_path, damage):
    store.snapshot("w", "p", write_tree(tmp_path / "v1", {"a": "a"}))
    version = store.version("w", "p")
    DAMAGE[damage](store.objects.path(version.manifest))
    fresh = Store.open(tmp_path / ".cas", state=str(tmp_path / "state2.db"))  # no memo
    with pytest.raises((CorruptObject, MissingObject, ValueError)) as caught:
        fresh.checkout("w", "p", tmp_path / "dest")
    assert version.manifest in str(caught.value) and "w:p version 1" in str(caught.value)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_new_snapshot_of_the_same_bytes_heals_a_damaged_object(store, tmp_path, damage):
    """Damage already in the store is not reused for new content, and is repaired.

    A truncated or missing object is noticed (by its size) when the same bytes are
    stored again. A same-size flipped byte is only found by re-hashing (verify).
    """
    content = {"a": b"precious" * 100}
    store.snapshot("w", "p", write_tree(tmp_path / "src", content))
    DAMAGE[damage](store.objects.path(_objects_of(store, "a")[0]))
    store.snapshot("w2", "p", write_tree(tmp_path / "other", content))
    store.checkout("w2", "p", tmp_path / "dest")
    store.checkout("w", "p", tmp_path / "dest-w")  # the older version is whole again too
    assert read_files(tmp_path / "dest") == read_files(tmp_path / "dest-w") == content


def test_failed_overwrite_does_not_apply_mode_changes_either(store, tmp_path):
    src = write_tree(tmp_path / "src", {"a.sh": "echo hi", "z.bin": "old data"})
    store.snapshot("w", "p", src)
    store.checkout("w", "p", tmp_path / "dest")
    os.chmod(src / "a.sh", 0o755)  # only the mode changes
    (src / "z.bin").write_text("new data!")
    store.snapshot("w", "p", src)
    digest = _objects_of(store, "z.bin")[0]
    os.unlink(store.objects.path(digest))
    with pytest.raises(MissingObject, match=digest):
        store.checkout("w", "p", tmp_path / "dest", overwrite=True)
    assert os.stat(tmp_path / "dest" / "a.sh").st_mode & 0o777 == 0o644
    assert (tmp_path / "dest" / "z.bin").read_text() == "old data"
