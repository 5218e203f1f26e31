"""A store on S3, against moto's S3 server speaking the real protocol over loopback."""

import os
import uuid

import pytest
from conftest import read_tree, write_tree

from cas_storage import Store
from cas_storage.errors import VersionExists


def test_snapshot_checkout_and_versions_on_s3(s3_endpoint, tmp_path):
    url = f"s3://cas-bucket/{uuid.uuid4().hex}"
    store = Store.open(url, state=str(tmp_path / "state.db"))
    src = write_tree(tmp_path / "src", {"model.pt": os.urandom(3_000_000), "cfg.json": "{}"})
    v1 = store.snapshot("root.train", "ckpt", src)
    assert store.snapshot("root.train", "ckpt", src) == v1
    (src / "cfg.json").write_text('{"lr": 1}')
    v2 = store.snapshot("root.train", "ckpt", src)
    assert [v.number for v in store.versions("root.train", "ckpt")] == [1, 2]
    first = store.checkout("root.train", "ckpt", tmp_path / "out", version=1)
    assert first.files_transferred == 2
    swap = store.checkout("root.train", "ckpt", tmp_path / "out", overwrite=True)
    assert (swap.version, swap.files_transferred, swap.bytes_transferred) == (v2.number, 1, 9)
    assert read_tree(tmp_path / "out") == read_tree(src)
    # A second machine (its own state file) sees the same versions.
    other = Store.open(url, state=str(tmp_path / "other.db"))
    assert [v.manifest for v in other.versions("root.train", "ckpt")] == [v1.manifest, v2.manifest]


def test_s3_refuses_to_claim_a_version_twice(s3_endpoint, tmp_path):
    store = Store.open(f"s3://cas-bucket/{uuid.uuid4().hex}", state=str(tmp_path / "s.db"))
    v1 = store.snapshot("w", "p", write_tree(tmp_path / "src", {"a": "a"}))
    with pytest.raises(VersionExists):  # the conditional PUT (If-None-Match: *) loses
        store.catalog.create(v1)
