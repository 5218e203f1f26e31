"""Stores on fsspec URLs: objects plus one immutable catalog object per version."""

import uuid

import fsspec
import pytest
from conftest import read_tree, write_tree

from cas_storage import Store
from cas_storage.errors import StoreFormatError, VersionExists


@pytest.fixture
def remote(tmp_path):
    url = f"memory://cas-test-{uuid.uuid4().hex}"
    store = Store.open(url, state=str(tmp_path / "state.db"))
    yield store
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(root, recursive=True)


def test_snapshot_and_checkout_through_a_url(remote, tmp_path):
    src = write_tree(tmp_path / "src", {"a.txt": "one", "d/b.bin": b"\x01" * 5000})
    v1 = remote.snapshot("root.train", "outputs/ckpt", src)
    assert remote.snapshot("root.train", "outputs/ckpt", src) == v1
    (src / "a.txt").write_text("two")
    v2 = remote.snapshot("root.train", "outputs/ckpt", src)
    assert [v.number for v in remote.versions("root.train", "outputs/ckpt")] == [1, 2]
    assert remote.works() == ["root.train"] and remote.paths("root.train") == ["outputs/ckpt"]
    r = remote.checkout("root.train", "outputs/ckpt", tmp_path / "out", version=1)
    assert r.version == 1 and read_tree(tmp_path / "out")["a.txt"] == b"one"
    r = remote.checkout("root.train", "outputs/ckpt", tmp_path / "out", overwrite=True)
    assert (r.version, r.files_transferred, r.bytes_transferred) == (v2.number, 1, 3)


def test_version_numbers_are_claimed_once(remote, tmp_path):
    src = write_tree(tmp_path / "src", {"a": "a"})
    v1 = remote.snapshot("w", "p", src)
    with pytest.raises(VersionExists):
        remote.catalog.create(v1)


def test_missing_and_newer_remote_stores_are_refused(tmp_path):
    url = f"memory://cas-test-{uuid.uuid4().hex}"
    with pytest.raises(FileNotFoundError, match="not found"):
        Store.open(url, state=str(tmp_path / "s.db"), create=False)
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/meta.json", b'{"format": 99, "store_id": "x"}')
    with pytest.raises(StoreFormatError, match="format 99"):
        Store.open(url, state=str(tmp_path / "s.db"))
