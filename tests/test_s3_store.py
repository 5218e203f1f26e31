"""A store on S3, against moto's S3 server speaking the real protocol over loopback."""

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest
from conftest import read_tree, write_tree

from cas_storage import Store
from cas_storage.errors import StoreUnavailable, VersionExists


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


def test_storage_options_reach_the_filesystem(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option says where the server is
    url = f"s3://cas-bucket/{uuid.uuid4().hex}"
    options = {"endpoint_url": s3_endpoint}
    store = Store.open(url, state=str(tmp_path / "s.db"), storage_options=options)
    store.snapshot("w", "p", write_tree(tmp_path / "src", {"a": "a"}))
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "cas_storage.cli", "--store", url, "--json", "ls"]
        + ["--store-option", f"endpoint_url={s3_endpoint}"],
        env={**env, "CAS_STATE": str(tmp_path / "cli.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert (row["work"], row["path"], row["versions"]) == ("w", "p", 1)


def _cas(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cas_storage.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_backend_failures_are_one_line_naming_the_store(s3_endpoint, tmp_path):
    url = f"s3://cas-bucket/{uuid.uuid4().hex}"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare.update(HOME=str(tmp_path), AWS_DEFAULT_REGION="us-east-1")  # no credentials at all
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    cases = {
        "no credentials": (bare, ["--store-option", f"endpoint_url={s3_endpoint}"]),
        "no endpoint": ({**os.environ}, ["--store-option", f"endpoint_url={closed}"]),
    }
    for what, (env, options) in cases.items():
        done = _cas(["--store", url, *options, "ls"], {**env, "CAS_STATE": str(tmp_path / "s")})
        assert done.returncode == 1, what
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"cas: error: cannot open store {url}: "), done.stderr
    with pytest.raises(StoreUnavailable, match="cannot open store nosuchfs://x/y"):
        Store.open("nosuchfs://x/y", state=str(tmp_path / "s.db"))  # no fsspec plugin for it


def test_opening_reads_meta_json_once_and_names_what_is_missing(s3_endpoint, tmp_path):
    url = f"s3://cas-bucket/{uuid.uuid4().hex}"
    with pytest.raises(FileNotFoundError, match=f"store {url} not found \\(no meta.json\\)"):
        Store.open(url, create=False, state=str(tmp_path / "s.db"))
    store = Store.open(url, state=str(tmp_path / "s.db"))  # creates it: nothing was left behind
    sent: list[str] = []  # fsspec hands the next open the same filesystem, so its client
    store.objects.fs.s3.meta.events.register(
        "before-send.s3", lambda **kw: sent.append(kw["event_name"])
    )
    assert Store.open(url, create=False, state=str(tmp_path / "s.db")).store_id == store.store_id
    assert sent == ["before-send.s3.GetObject"]
    gone = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/cas"
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        Store.open(gone, create=False, state=str(tmp_path / "s.db"))
    with pytest.raises(StoreUnavailable, match=f"cannot open store {gone}"):
        Store.open(gone, state=str(tmp_path / "s.db"))


def test_listing_times_read_as_botocore_reads_them(s3_endpoint, tmp_path):
    from botocore.utils import parse_timestamp

    from cas_storage import remote

    for value in (
        "2026-12-02T01:23:38.000Z",  # as S3 lists them
        "2026-12-02T01:23:38.123456Z",
        "2026-12-02T01:23:38Z",
        "2026-12-02T01:23:38.1Z",  # not for fromisoformat on 3.10: botocore's parser
        "Wed, 02 Dec 2026 01:23:38 GMT",  # as S3 sends Last-Modified headers
        1796174618,
    ):
        assert remote._timestamp(value) == parse_timestamp(value), value
    store = Store.open(f"s3://cas-bucket/{uuid.uuid4().hex}", state=str(tmp_path / "s.db"))
    v = store.snapshot("w", "p", write_tree(tmp_path / "src", {"a": "a"}))
    [record] = [e for e in remote.listing(store.objects.fs, store.catalog.dir) if "json" in e.path]
    assert record.modified is not None and abs(record.modified - v.created.timestamp()) < 600
