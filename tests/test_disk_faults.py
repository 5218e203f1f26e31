"""Disk full and permission faults, simulated with pyfakefs.

The catalog and stat cache are SQLite (C code that pyfakefs cannot see), so
they stay on the real disk; objects are mapped read-only into the fake
filesystem and the destination lives only there.
"""

import errno
import os

import pytest
from conftest import write_tree
from pyfakefs.fake_filesystem_unittest import Patcher
from pyfakefs.helpers import reset_ids, set_uid

from cas_storage import Store


def map_store(fs, store_dir) -> None:
    """Map the real objects into the fake disk and load them now, so that reading
    them later does not count against the fake disk's free space."""
    fs.add_real_directory(str(store_dir))
    for dirpath, _, names in os.walk(str(store_dir)):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as stream:
                stream.read()


def test_disk_full_during_checkout_leaves_each_file_old_or_new(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    old = {f"f{i}.bin": bytes([i]) * 50_000 for i in range(6)}
    new = {f"f{i}.bin": bytes([100 + i]) * 50_000 for i in range(6)}
    new.update({f"g{i}.bin": bytes([200 + i]) * 50_000 for i in range(4)})  # v2 needs more room
    store.snapshot("w", "p", write_tree(tmp_path / "v1", old))
    store.snapshot("w", "p", write_tree(tmp_path / "v2", new))
    with Patcher() as patcher:
        fs = patcher.fs
        map_store(fs, tmp_path / ".cas")
        fs.create_dir("/dest")
        store.checkout("w", "p", "/dest/ckpt", version=1)
        fs.set_disk_usage(10**9)  # usage is only tracked once a size is set
        fs.set_disk_usage(fs.get_disk_usage("/").used + 120_000)  # room for two more files
        with pytest.raises(OSError) as caught:
            store.checkout("w", "p", "/dest/ckpt", version=2, overwrite=True)
        assert caught.value.errno == errno.ENOSPC
        assert "/dest/ckpt/" in str(caught.value)
        present = sorted(os.listdir("/dest/ckpt"))
        assert not [n for n in present if "cas-tmp" in n]  # no temp files left behind
        for name in present:
            data = open(f"/dest/ckpt/{name}", "rb").read()
            assert data in (old.get(name), new[name]), f"{name} is torn"
        assert set(old) <= set(present) and set(present) != set(new)
        # With room again, the checkout completes.
        fs.set_disk_usage(10**9)
        store.checkout("w", "p", "/dest/ckpt", version=2, overwrite=True)
        assert all(open(f"/dest/ckpt/{n}", "rb").read() == new[n] for n in new)


def test_disk_full_on_fresh_checkout_creates_nothing(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    store.snapshot(
        "w", "p", write_tree(tmp_path / "v1", {"a": b"a" * 100_000, "b": b"b" * 100_000})
    )
    with Patcher() as patcher:
        map_store(patcher.fs, tmp_path / ".cas")
        patcher.fs.create_dir("/dest")
        patcher.fs.set_disk_usage(10**9)
        patcher.fs.set_disk_usage(patcher.fs.get_disk_usage("/").used + 150_000)
        with pytest.raises(OSError, match="No space|space"):
            store.checkout("w", "p", "/dest/ckpt")
        assert os.listdir("/dest") == []


def test_permission_denied_names_the_destination(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    store.snapshot("w", "p", write_tree(tmp_path / "v1", {"a": "a"}))
    with Patcher() as patcher:
        map_store(patcher.fs, tmp_path / ".cas")
        patcher.fs.create_dir("/locked", perm_bits=0o555)
        set_uid(4321)  # act as an ordinary user: root would ignore the folder's mode
        try:
            with pytest.raises(PermissionError) as caught:
                store.checkout("w", "p", "/locked/ckpt")
        finally:
            reset_ids()
        assert "/locked" in str(caught.value)
