"""`cas serve`: the read-only web view, through Flask's test client and a real process."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request

import pytest
from conftest import write_tree

from cas_storage import Store
from cas_storage.serve import create_app


@pytest.fixture
def populated(tmp_path: pathlib.Path) -> Store:
    """root.train:ckpt with 3 versions (one unchanged file shared by all), a drive put."""
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    big = os.urandom(300_000)
    src = write_tree(tmp_path / "ckpt", {"weights.bin": big, "cfg/lr.txt": "1", "gone.txt": "x"})
    store.snapshot("root.train", "ckpt", src)
    (src / "gone.txt").unlink()
    write_tree(src, {"cfg/lr.txt": "2", "new <b>.txt": "n"})
    store.snapshot("root.train", "ckpt", src)
    write_tree(src, {"cfg/lr.txt": "3"})
    store.snapshot("root.train", "ckpt", src)
    store.snapshot("drive:shared/root.a", "data", src)
    return store


def test_pages_show_works_versions_files_and_diffs(populated):
    client = create_app(populated).test_client()
    index = client.get("/").get_data(as_text=True)
    assert "root.train" in index and "drive shared (root.a)" in index
    assert 'href="/path?work=root.train&amp;path=ckpt"' in index

    page = client.get("/path?work=root.train&path=ckpt").get_data(as_text=True)
    rows = re.findall(r'class="version-link"[^>]*>(\d+)</a>', page)
    assert rows == ["3", "2", "1"]  # newest first
    changes = [
        tuple(m)
        for m in re.findall(
            r'"add">\+(\d+)</span> <span class="del">−(\d+)</span> '
            r'<span class="mod">~(\d+)<',
            page,
        )
    ]
    assert changes == [("0", "0", "1"), ("1", "1", "1")] and "first version" in page
    data = json.loads(re.search(r'id="usage-data"[^>]*>(.*?)</script>', page, re.S).group(1))
    assert data["versions"] == [1, 2, 3]
    # weights.bin is stored once: logical grows by it every version, stored does not
    assert data["logical"][2] - data["logical"][0] >= 600_000
    assert data["stored"][2] - data["stored"][0] < 10
    assert "chart.umd.min.js" in page

    version = client.get("/version?work=root.train&path=ckpt&v=2").get_data(as_text=True)
    assert "weights.bin" in version and "293 KiB" in version and "lr.txt" in version
    assert "new &lt;b&gt;.txt" in version  # names are escaped, never markup

    diff = client.get("/diff?work=root.train&path=ckpt&a=1&b=3").get_data(as_text=True)
    assert "1 added" in diff and "1 removed" in diff and "1 changed" in diff
    assert "gone.txt" in diff and "cfg/lr.txt" in diff


def test_download_is_the_stored_bytes(populated, tmp_path):
    client = create_app(populated).test_client()
    got = client.get("/file?work=root.train&path=ckpt&v=1&file=weights.bin")
    assert got.status_code == 200
    assert got.data == (tmp_path / "ckpt" / "weights.bin").read_bytes()
    assert "attachment" in got.headers["Content-Disposition"]
    assert client.get("/file?work=root.train&path=ckpt&v=3&file=cfg/lr.txt").data == b"3"


@pytest.mark.parametrize(
    "url, status, text",
    [
        ("/path?work=root.nope&path=ckpt", 404, "root.nope:ckpt not found"),
        ("/version?work=root.train&path=ckpt&v=9", 404, "version 9 not found"),
        ("/version?work=root.train&path=ckpt&v=x", 400, "not a number"),
        ("/file?work=root.train&path=ckpt&v=1&file=nope", 404, "nope not found"),
        ("/file?work=root.train&path=ckpt&v=1&file=cfg", 404, "is a folder"),
        ("/diff?work=root.train&path=ckpt&a=1&b=7", 404, "version 7 not found"),
        ("/path?work=root.train", 400, "path"),
    ],
)
def test_bad_requests_get_a_clear_page(populated, url, status, text):
    got = create_app(populated).test_client().get(url)
    assert got.status_code == status and text in got.get_data(as_text=True), url


def fingerprint(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every object, plus a digest of the catalog's versions."""
    found = {}
    for dirpath, _, names in os.walk(root / "objects"):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            found[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return found


def test_browsing_never_writes_to_the_store(populated, tmp_path):
    before = fingerprint(tmp_path / ".cas")
    rows = [v.to_json() for v in populated.catalog.all_versions()]
    reader = Store.open(tmp_path / ".cas", create=False, state=str(tmp_path / "s2.db"))
    client = create_app(reader).test_client()
    for url in (
        "/",
        "/path?work=root.train&path=ckpt",
        "/version?work=root.train&path=ckpt&v=1",
        "/diff?work=root.train&path=ckpt&a=1&b=2",
        "/file?work=root.train&path=ckpt&v=1&file=weights.bin",
    ):
        assert client.get(url).status_code == 200, url
    assert client.post("/").status_code == 405  # nothing accepts a write
    assert fingerprint(tmp_path / ".cas") == before
    assert [v.to_json() for v in reader.catalog.all_versions()] == rows


def test_cas_serve_binds_loopback_and_serves(populated, tmp_path):
    env = {**os.environ, "CAS_STATE": str(tmp_path / "state.db")}
    server = subprocess.Popen(
        [sys.executable, "-m", "cas_storage.cli", "--store", str(tmp_path / ".cas"), "serve"]
        + ["--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found and "read-only" in line, line + server.stderr.read()
        base = found.group(0)
        with urllib.request.urlopen(base + "path?work=root.train&path=ckpt", timeout=30) as r:
            assert r.status == 200 and b"usage-chart" in r.read()
        with urllib.request.urlopen(base + "static/chart.umd.min.js", timeout=30) as r:
            assert b"Chart.js v4" in r.read(200)  # vendored: no CDN
        url = base + "file?work=root.train&path=ckpt&v=1&file=weights.bin"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
        want = (tmp_path / "ckpt" / "weights.bin").read_bytes()
        assert hashlib.sha256(body).digest() == hashlib.sha256(want).digest()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_refuses_a_bad_port(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cas_storage.cli", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "--port" in done.stderr
