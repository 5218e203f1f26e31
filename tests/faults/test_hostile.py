"""Guarantee 4: hostile or broken input is rejected before anything is written.

Hostile manifests are planted the way a malicious or buggy writer would: raw
bytes stored as an object under their true digest, and a catalog row pointing
at them. A checkout of them must raise and leave no trace — nothing outside the
destination, nothing inside it, an existing destination untouched.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
from datetime import datetime, timezone

import pytest
from conftest import write_tree

from cas_storage import Path, Store
from cas_storage.catalog import FORMAT as CATALOG_FORMAT
from cas_storage.catalog import Version
from cas_storage.context import WorkContext, installed
from cas_storage.errors import CasError, StoreFormatError
from faults.faultkit import read_files

CONTENT = b"evil bytes"


def _plant(store: Store, body: bytes, path: str = "p") -> int:
    """Store ``body`` as an object and record it as the next version of ``("w", path)``."""
    digest = store.objects.put(body)
    latest = store.catalog.latest("w", path)
    number = latest.number + 1 if latest else 1
    store.catalog.create(Version("w", path, number, digest, datetime.now(timezone.utc), 1, 1))
    return number


def _dir(*entries: dict, kind: str = "dir", fmt: int = 1) -> bytes:
    return json.dumps({"format": fmt, "kind": kind, "entries": list(entries)}).encode()


def _file(path: str, digest: str, **extra) -> dict:
    return {"path": path, "type": "file", "mode": 0o644, "size": len(CONTENT), "digest": digest}


def _link(path: str, target: str) -> dict:
    return {"path": path, "type": "symlink", "mode": 0o777, "target": target}


def _folder(path: str) -> dict:
    return {"path": path, "type": "dir", "mode": 0o755}


def hostile_manifests(d: str) -> dict[str, bytes]:
    """Every way a manifest can try to escape, confuse or break a checkout."""
    chunked = dict(_file("big", d), chunks=[[d, 3], [d, 3]])
    return {
        "parent escape": _dir(_file("../x", d)),
        "deep parent escape": _dir(_folder("a"), _file("a/../../x", d)),
        "absolute path": _dir(_file("/tmp/cas-hostile-abs", d)),
        "NUL in name": _dir(_file("x\0y", d)),
        "empty name": _dir(_file("", d)),
        "dot name": _dir(_file(".", d)),
        "empty component": _dir(_folder("a"), _file("a//x", d)),
        "duplicate entries": _dir(_file("x", d), _file("x", d)),
        "file and folder of one name": _dir(_file("x", d), _folder("x")),
        "symlink to parent": _dir(_link("l", "../outside")),
        "symlink deep escape": _dir(_folder("a"), _link("a/l", "../../outside")),
        "absolute symlink": _dir(_link("l", "/etc")),
        "symlink with NUL": _dir(_link("l", "a\0b")),
        "empty symlink": _dir(_link("l", "")),
        "write through symlink": _dir(_folder("sub"), _link("l", "sub"), _file("l/x", d)),
        "unlisted parent": _dir(_file("a/x", d)),
        "file as parent": _dir(_file("a", d), _file("a/x", d)),
        "unknown type": _dir({"path": "x", "type": "fifo", "mode": 0o644}),
        "file-type bits in mode": _dir(dict(_file("x", d), mode=0o100644)),
        "setuid program": _dir(dict(_file("x", d), mode=0o4755)),
        "setgid program": _dir(dict(_file("x", d), mode=0o2755)),
        "folder mode not a number": _dir({"path": "a", "type": "dir", "mode": "rwx"}),
        "folder mode with type bits": _dir({"path": "a", "type": "dir", "mode": 0o40755}),
        "negative size": _dir(dict(_file("x", d), size=-1)),
        "digest is a path": _dir(dict(_file("x", d), digest="../../../etc/passwd")),
        "chunks do not add up": _dir(chunked),
        "chunk digest is a path": _dir(dict(_file("big", d), chunks=[["../x", 10]])),
        "file manifest with two entries": _dir(_file(".", d), _file(".", d), kind="file"),
        "file manifest not named '.'": _dir(_file("x", d), kind="file"),
        "unknown kind": _dir(_file("x", d), kind="tree"),
        "future manifest format": _dir(_file("x", d), fmt=2),
        "not JSON": b"\x00\xffnot json",
        "JSON but not an object": b"[1, 2, 3]",
        "entries not a list": json.dumps({"format": 1, "kind": "dir", "entries": 7}).encode(),
        "entry missing keys": _dir({"path": "x"}),
        "entry not an object": _dir("x"),
    }


def _everything_under(root: pathlib.Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, names in os.walk(root)
        for n in dirs + names
    }


def test_hostile_manifests_are_refused_before_anything_is_written(store, tmp_path):
    digest = store.objects.put(CONTENT)
    cases = hostile_manifests(digest)
    box = tmp_path / "box"
    (box / "existing").mkdir(parents=True)
    write_tree(box / "existing", {"keep.txt": "mine"})
    before = _everything_under(tmp_path)
    for name, body in cases.items():
        number = _plant(store, body)
        for dest, overwrite in ((box / "fresh", False), (box / "existing", True)):
            with pytest.raises((CasError, ValueError)):
                store.checkout("w", "p", dest, version=number, overwrite=overwrite)
            after = _everything_under(tmp_path) - {".cas", "state.db", "state.db-wal"}
            new = {p for p in after - before if not p.startswith((".cas/", "state.db"))}
            assert new == set(), f"{name}: a refused checkout wrote {sorted(new)}"
            assert read_files(box / "existing") == {"keep.txt": b"mine"}, name
    assert not os.path.lexists("/tmp/cas-hostile-abs")
    print(f"\nhostile manifests: {len(cases)} kinds x 2 destinations refused, nothing written")


def test_hostile_catalog_rows_are_refused(store, tmp_path):
    content = store.objects.put(b"not a manifest")
    when = datetime.now(timezone.utc)
    rows = {
        "manifest is a path": Version("w", "p", 1, "../../../etc/passwd", when, 1, 1),
        "manifest is a content object": Version("w", "q", 1, content, when, 1, 1),
        "manifest is missing": Version("w", "r", 1, "ab" * 16, when, 1, 1),
    }
    for version in rows.values():
        store.catalog.create(version)
    for name, version in rows.items():
        with pytest.raises((CasError, ValueError)) as caught:
            store.checkout("w", version.path, tmp_path / "dest")
        assert not (tmp_path / "dest").exists(), name
        if name == "manifest is missing":
            assert "ab" * 16 in str(caught.value) and "w:r" in str(caught.value)
    # A row whose key escapes is unreachable: every lookup normalizes and refuses the key.
    store.catalog.create(Version("w", "../escape", 1, content, when, 1, 1))
    for bad in ("../escape", "a/../../escape", "/abs"):
        with pytest.raises(ValueError):
            store.checkout("w", bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("spelling", ["lit://../x", "lit://a/../../x", "lit://../../etc"])
def test_lit_paths_escaping_the_work_root_are_refused(store, tmp_path, spelling):
    root = tmp_path / "work"
    root.mkdir()
    store.snapshot("root.src", "x", write_tree(tmp_path / "x", {"a": "a"}))
    outside = Path(os.path.join(str(root), "..", "x"), origin="root.src")
    with installed(WorkContext("root.dst", root, store)):
        for path in (Path(spelling, origin="root.src"), outside):
            for call in (lambda p: p.get(overwrite=True), lambda p: p.exists_remote()):
                with pytest.raises(ValueError, match="root|escape"):
                    call(path)
    assert os.listdir(root) == [] and read_files(tmp_path / "x") == {"a": b"a"}


def _damage(kind: str, catalog: pathlib.Path) -> None:
    data = catalog.read_bytes()
    if kind == "garbage":
        catalog.write_bytes(os.urandom(len(data)))
    elif kind == "zeroed header":
        catalog.write_bytes(bytes(100) + data[100:])
    elif kind == "truncated":
        catalog.write_bytes(data[: len(data) // 3])
    elif kind == "scribbled pages":
        page = 4096
        catalog.write_bytes(data[:page] + os.urandom(len(data) - page))
    elif kind == "empty file":
        catalog.write_bytes(b"")


@pytest.mark.parametrize("kind", ["garbage", "zeroed header", "truncated", "scribbled pages"])
def test_corrupted_catalog_is_a_clear_error_and_left_as_found(tmp_path, kind):
    store_dir = tmp_path / ".cas"
    store = Store.open(store_dir, state=str(tmp_path / "state.db"))
    src = write_tree(tmp_path / "src", {"a": "a"})
    for i in range(200):  # enough rows for several pages, so damage can hit the table
        (src / "a").write_text(f"v{i}")
        store.snapshot("w", f"p{i % 20}", src)
    store.close()
    catalog = store_dir / "catalog.db"
    sqlite3.connect(catalog).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    for extra in ("catalog.db-wal", "catalog.db-shm"):
        (store_dir / extra).unlink(missing_ok=True)
    _damage(kind, catalog)
    damaged = catalog.read_bytes()
    with pytest.raises(StoreFormatError, match="catalog.db"):
        reopened = Store.open(store_dir, state=str(tmp_path / "state.db"))
        # Damage past the first pages surfaces at the first read, with the same error.
        for i in range(20):
            reopened.versions("w", f"p{i}")
        reopened.checkout("w", "p0", tmp_path / "dest")
    assert catalog.read_bytes() == damaged, "a refused catalog was written to"
    assert not (tmp_path / "dest").exists()


def test_store_from_a_future_format_is_refused_untouched(tmp_path):
    store_dir = tmp_path / ".cas"
    Store.open(store_dir, state=str(tmp_path / "state.db")).close()
    catalog = store_dir / "catalog.db"
    conn = sqlite3.connect(catalog)
    conn.execute("PRAGMA journal_mode=DELETE")  # a future format may journal differently
    conn.execute("UPDATE meta SET value=? WHERE key='format'", (str(CATALOG_FORMAT + 1),))
    conn.execute("ALTER TABLE versions RENAME TO versions_v2")  # and lay out tables anew
    conn.commit()
    conn.close()
    before = catalog.read_bytes()
    with pytest.raises(StoreFormatError, match=f"format {CATALOG_FORMAT + 1}.*newer"):
        Store.open(store_dir, state=str(tmp_path / "state.db"))
    assert catalog.read_bytes() == before, "a store of a newer format was modified"
    assert not (store_dir / "catalog.db-wal").exists()


def test_unreadable_format_marker_is_refused(tmp_path):
    store_dir = tmp_path / ".cas"
    Store.open(store_dir, state=str(tmp_path / "state.db")).close()
    with sqlite3.connect(store_dir / "catalog.db") as conn:
        conn.execute("UPDATE meta SET value='two' WHERE key='format'")
    with pytest.raises(StoreFormatError, match="format"):
        Store.open(store_dir, state=str(tmp_path / "state.db"))


def test_symlinks_planted_in_the_destination_are_replaced_not_followed(store, tmp_path):
    """Local links where the snapshot has files or folders never let a checkout write outside."""
    outside = tmp_path / "outside"
    write_tree(outside, {"victim.txt": "do not touch"})
    src = write_tree(tmp_path / "src", {"a.txt": "A", "d/x.txt": "X"})
    store.snapshot("w", "p", src)
    dest = tmp_path / "dest"
    store.checkout("w", "p", dest)
    (dest / "a.txt").unlink()
    os.symlink(outside / "victim.txt", dest / "a.txt")  # a file entry's place
    os.rename(dest / "d", tmp_path / "old-d")
    os.symlink(outside, dest / "d")  # a folder entry's place
    store.checkout("w", "p", dest, overwrite=True)
    assert read_files(outside) == {"victim.txt": b"do not touch"}
    assert not (dest / "a.txt").is_symlink() and not (dest / "d").is_symlink()
    assert read_files(dest) == {"a.txt": b"A", "d/x.txt": b"X"}
    # A single-file checkout onto a planted link replaces the link too.
    (tmp_path / "m").write_text("model")
    store.snapshot("w", "m", tmp_path / "m")
    os.symlink(outside / "victim.txt", tmp_path / "m-dest")
    store.checkout("w", "m", tmp_path / "m-dest", overwrite=True)
    assert (outside / "victim.txt").read_text() == "do not touch"
    assert (tmp_path / "m-dest").read_text() == "model"


def test_snapshot_does_not_record_setid_bits(store, tmp_path):
    src = write_tree(tmp_path / "src", {"tool": "#!/bin/sh\n", "sub/f": "f"})
    os.chmod(src / "tool", 0o4755)
    os.chmod(src / "sub", 0o2775)  # a setgid folder (group inheritance) is kept
    store.snapshot("w", "p", src)
    store.checkout("w", "p", tmp_path / "dest")
    assert os.stat(tmp_path / "dest" / "tool").st_mode & 0o7777 == 0o755
    assert os.stat(tmp_path / "dest" / "sub").st_mode & 0o7777 == 0o2775


def test_export_git_makes_valid_refs_from_any_stored_path(tmp_path):
    """Git's ref rules (no leading '.', no '..', no '.lock' end, no '@{', ...) hold for any key."""
    import subprocess

    from cas_storage.cli import main

    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    keys = [".hidden/x.lock", "a..b", "trailing.", "weird name@{x}~^:?*[\\", "-dash", "ok/fine"]
    for work in ("root.w", ".lead..ing.lock"):
        for key in keys:
            store.snapshot(work, key, src)
    repo = tmp_path / "history"
    assert main(["--store", str(tmp_path / ".cas"), "export-git", str(repo)]) == 0
    refs = subprocess.run(
        ["git", "-C", str(repo), "for-each-ref", "--format=%(refname)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(refs) == 2 * len(keys)
    for ref in refs:
        check = subprocess.run(["git", "check-ref-format", ref], capture_output=True)
        assert check.returncode == 0, f"git refuses {ref}"
