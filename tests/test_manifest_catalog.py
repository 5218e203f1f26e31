import json
import sqlite3
from datetime import datetime, timezone

import pytest

from cas_storage.catalog import SQLiteCatalog, Version
from cas_storage.errors import InvalidManifest, StoreFormatError, UnknownVersion, VersionExists
from cas_storage.manifest import DIR, FILE, SYMLINK, Entry, Manifest, diff

D = "0" * 32


def f(path, digest=D, size=1, mode=0o644):
    return Entry(path, FILE, mode, size, digest)


def test_encoding_is_canonical_and_order_independent():
    a = Manifest.build(DIR, [Entry("d", DIR, 0o755), f("d/x"), f("a")])
    b = Manifest.build(DIR, [f("a"), f("d/x"), Entry("d", DIR, 0o755)])
    assert a.encode() == b.encode() and a.digest() == b.digest()
    assert Manifest.decode(a.encode()) == a
    assert Manifest.build(DIR, [f("a", size=2)]).digest() != Manifest.build(DIR, [f("a")]).digest()


@pytest.mark.parametrize(
    "entries, reason",
    [
        ([f("/etc/passwd")], "absolute"),
        ([f("../x")], "'..'"),
        ([Entry("d", DIR, 0o755), f("d/../../x")], "'..'"),
        ([f("")], "empty"),
        ([f("a"), f("a")], "duplicate"),
        ([f("a\0b")], "NUL"),
        ([f("a/b")], "not a listed folder"),
        ([f("a"), f("a/b")], "not a listed folder"),
        ([Entry("l", SYMLINK, 0o777, target="/etc")], "outside"),
        ([Entry("l", SYMLINK, 0o777, target="../../x")], "outside"),
        ([f("a", digest="zz")], "digest"),
        ([f("a", mode=0o100644)], "mode"),
        ([Entry("a", FILE, 0o644, 5, D, chunks=((D, 4),))], "add up"),
        ([Entry("a", "fifo", 0o644)], "unknown type"),
    ],
)
def test_validation_rejects_unsafe_entries(entries, reason):
    with pytest.raises(InvalidManifest, match=reason):
        Manifest.build(DIR, entries)


def test_decode_rejects_hostile_bytes():
    good = json.loads(Manifest.build(DIR, [f("a")]).encode())
    good["entries"][0]["path"] = "../../evil"
    with pytest.raises(InvalidManifest):
        Manifest.decode(json.dumps(good).encode())
    with pytest.raises(InvalidManifest, match="JSON"):
        Manifest.decode(b"\xff not json")
    with pytest.raises(InvalidManifest, match="format"):
        Manifest.decode(json.dumps({"format": 99, "kind": "dir", "entries": []}).encode())


def test_inside_links_are_fine():
    Manifest.build(
        DIR, [Entry("d", DIR, 0o755), Entry("d/l", SYMLINK, 0o777, target="../a"), f("a")]
    )


def test_diff_and_subtree():
    old = Manifest.build(DIR, [f("keep"), f("gone"), f("edit", size=1), Entry("d", DIR, 0o755)])
    new = Manifest.build(DIR, [f("keep"), f("new"), f("edit", size=2), Entry("d", DIR, 0o755)])
    d = diff(old, new)
    assert (d.added, d.removed, d.changed) == (["new"], ["gone"], ["edit"])
    assert not diff(old, old)
    inner = Manifest.build(DIR, [Entry("d", DIR, 0o755), f("d/x", size=3)])
    assert inner.subtree("d/x").kind == FILE and inner.subtree("d/x").entries[0].size == 3
    assert [e.path for e in inner.subtree("d").entries] == ["x"]
    with pytest.raises(FileNotFoundError):
        inner.subtree("nope")


def version(n, manifest=D, work="w", path="p"):
    return Version(work, path, n, manifest, datetime.now(timezone.utc), 1, 10)


def test_catalog_versions_and_compare_and_swap(tmp_path):
    cat = SQLiteCatalog(str(tmp_path / "catalog.db"))
    assert cat.latest("w", "p") is None
    with pytest.raises(FileNotFoundError, match="w:p"):
        cat.get("w", "p")
    cat.create(version(1))
    cat.create(version(2, "1" * 32))
    with pytest.raises(VersionExists):
        cat.create(version(2, "2" * 32))
    assert [v.number for v in cat.versions("w", "p")] == [1, 2]
    assert cat.get("w", "p").manifest == "1" * 32
    assert cat.get("w", "p", 1).manifest == D
    with pytest.raises(UnknownVersion, match="version 7 not found"):
        cat.get("w", "p", 7)
    assert cat.works() == ["w"] and cat.paths("w") == ["p"]
    reopened = SQLiteCatalog(str(tmp_path / "catalog.db"))
    assert reopened.store_id == cat.store_id and len(reopened.all_versions()) == 2


def test_newer_catalog_format_is_refused(tmp_path):
    SQLiteCatalog(str(tmp_path / "catalog.db"))
    conn = sqlite3.connect(tmp_path / "catalog.db")
    conn.execute("UPDATE meta SET value='99' WHERE key='format'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreFormatError, match="format 99"):
        SQLiteCatalog(str(tmp_path / "catalog.db"))


def test_damaged_catalog_is_a_clear_error(tmp_path):
    (tmp_path / "catalog.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreFormatError, match="catalog.db"):
        SQLiteCatalog(str(tmp_path / "catalog.db"))
