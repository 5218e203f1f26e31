"""A store on S3, against moto's S3 server speaking the real protocol over loopback."""

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from conftest import read_tree, write_tree

from cas_storage import Store
from cas_storage.errors import VersionExists


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        raise RuntimeError("moto S3 server did not start")
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("cas-bucket")
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=10)


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
