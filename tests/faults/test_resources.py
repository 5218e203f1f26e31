"""Guarantee 5: disk full and permission denied, during snapshot and checkout.

Objects, sources and destinations live on a pyfakefs disk whose size we choose
(see ``tests/test_disk_faults.py`` for the patterns: SQLite is C code pyfakefs
cannot see, so the catalog stays on the real disk). A full catalog is made real
with SQLite's own size limit (``max_page_count``) — the same SQLITE_FULL a full
disk gives. Each failure must be a clear ``OSError`` naming the file, and leave
the store as it was: no new version, no temp files, every old version intact.
"""

from __future__ import annotations

import errno
import os

import pytest
from conftest import write_tree
from pyfakefs.fake_filesystem_unittest import Patcher
from pyfakefs.helpers import reset_ids, set_uid

from cas_storage import Store


def _map_store(fs, store_dir) -> None:
    """Objects readable and writable on the fake disk; read once so they count as used."""
    fs.add_real_directory(str(store_dir), read_only=False)
    for dirpath, _, names in os.walk(str(store_dir)):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as stream:
                stream.read()


def _temp_files(root: str) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if ".tmp-" in n]


def _stored(tmp_path) -> Store:
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    store.snapshot("w", "p", write_tree(tmp_path / "v1", {"a": b"a" * 1000, "b/c": b"c"}))
    return store


@pytest.mark.parametrize(
    ("files", "size", "room", "where"),
    [(8, 100_000, 250_000, "objects"), (40, 25_000, 500_000, "packs")],
    ids=["loose objects", "half a pack"],
)
def test_disk_full_during_snapshot_leaves_the_store_unchanged(tmp_path, files, size, room, where):
    """Eight big files are stored as loose objects, forty small ones in a pack; the
    disk fills part-way through either."""
    store = _stored(tmp_path)
    before = store.versions("w", "p")
    with Patcher() as patcher:
        fs = patcher.fs
        _map_store(fs, tmp_path / ".cas")
        fs.create_dir("/src")
        for i in range(files):
            fs.create_file(f"/src/f{i:02d}.bin", contents=os.urandom(size))
        fs.set_disk_usage(10**9)
        fs.set_disk_usage(fs.get_disk_usage("/").used + room)
        with pytest.raises(OSError) as caught:
            store.snapshot("w", "p", "/src")
        assert caught.value.errno == errno.ENOSPC
        assert str(tmp_path / ".cas" / where) in str(caught.value)
        assert store.versions("w", "p") == before  # no version points at missing objects
        assert _temp_files(str(tmp_path / ".cas")) == []
        packs = tmp_path / ".cas" / "packs"
        assert not packs.exists() or not os.listdir(packs)  # no index without its pack
        store.checkout("w", "p", "/old")  # the last good version is whole
        assert open("/old/a", "rb").read() == b"a" * 1000
        fs.set_disk_usage(10**9)  # with room again the same snapshot goes through
        # (Reading a new pack back needs os.pread, which pyfakefs does not fake.)
        assert store.snapshot("w", "p", "/src").number == 2


def test_full_catalog_is_an_oserror_and_records_nothing(tmp_path):
    store = _stored(tmp_path)
    conn = store.catalog.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # SQLITE_FULL, as on a full disk
    src = write_tree(tmp_path / "v2", {f"k{i}": f"key {i}" * 10 for i in range(300)})
    with pytest.raises(OSError) as caught:
        for i in range(300):  # fill the last free page, then one more row cannot fit
            store.snapshot("w", f"p{i}", src / f"k{i}")
    assert caught.value.errno == errno.ENOSPC and "catalog.db" in str(caught.value)
    recorded = {p for p in store.paths("w")}
    conn.execute(f"PRAGMA max_page_count={pages * 100}")
    missing = f"p{len(recorded) - 1}"
    assert missing not in recorded  # the failed snapshot recorded nothing
    assert store.snapshot("w", missing, src / f"k{len(recorded) - 1}").number == 1
    assert store.versions("w", "p")[0].number == 1


def test_permission_denied_during_snapshot_names_the_file(tmp_path):
    store = _stored(tmp_path)
    before = store.versions("w", "p")
    with Patcher() as patcher:
        fs = patcher.fs
        _map_store(fs, tmp_path / ".cas")
        fs.create_file("/src/ok.txt", contents="ok")
        fs.create_file("/src/secret.txt", contents="secret", st_mode=0o100000)
        fs.create_file("/src2/new.txt", contents="brand new content")
        objects = str(tmp_path / ".cas" / "objects")
        for dirpath, _, _ in os.walk(objects):
            fs.chmod(dirpath, 0o777)  # the store itself is writable for this user
        fs.makedirs(str(tmp_path / ".cas" / "locks"), exist_ok=True)
        fs.chmod(str(tmp_path / ".cas" / "locks"), 0o777)  # so are its lease records
        set_uid(4321)  # an ordinary user: root would ignore the modes
        try:
            with pytest.raises(PermissionError) as unreadable:
                store.snapshot("w", "p", "/src")
            reset_ids()
            for dirpath, _, _ in os.walk(objects):
                fs.chmod(dirpath, 0o555)
            set_uid(4321)
            with pytest.raises(PermissionError) as readonly_store:
                store.snapshot("w", "p", "/src2")
        finally:
            reset_ids()
        assert "/src/secret.txt" in str(unreadable.value)
        assert str(tmp_path / ".cas" / "objects") in str(readonly_store.value)
        assert store.versions("w", "p") == before
        assert _temp_files(str(tmp_path / ".cas")) == []


def test_permission_denied_on_overwrite_leaves_destination_as_it_was(tmp_path):
    store = _stored(tmp_path)
    store.snapshot("w", "p", write_tree(tmp_path / "v2", {"a": b"A" * 1000, "b/c": b"C"}))
    with Patcher() as patcher:
        fs = patcher.fs
        _map_store(fs, tmp_path / ".cas")
        store.checkout("w", "p", "/dest", version=1)
        fs.chmod("/dest", 0o755)  # owned by root: an ordinary user cannot write into it
        set_uid(4321)
        try:
            with pytest.raises(PermissionError) as caught:
                store.checkout("w", "p", "/dest", overwrite=True)
        finally:
            reset_ids()
        assert "/dest/" in str(caught.value)
        assert open("/dest/a", "rb").read() == b"a" * 1000  # not half of each version
        assert open("/dest/b/c", "rb").read() == b"c"
        assert _temp_files("/dest") == []
