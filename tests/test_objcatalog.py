"""The object-store catalog: claims, summaries, formats, and what S3 may answer."""

from __future__ import annotations

import collections
import errno
import json
import posixpath
import uuid
from datetime import datetime, timezone

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from cas_storage import Store
from cas_storage.catalog import Version
from cas_storage.errors import StoreFormatError, UnknownVersion, VersionExists
from cas_storage.objcatalog import FORMAT, ObjectCatalog


def _version(number: int, manifest: str = "m" * 32, work: str = "w", path: str = "a/b") -> Version:
    return Version(work, path, number, manifest, datetime.now(timezone.utc), 3, 42)


@pytest.fixture
def memory_root():
    root = f"/cat-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_versions_latest_and_get_by_number(memory_root):
    cat = ObjectCatalog(fsspec.filesystem("memory"), memory_root)
    for n in range(1, 13):  # past 9 and 10: keys must order numerically
        cat.create(_version(n, f"{n:032x}"))
    assert [v.number for v in cat.versions("w", "a/b")] == list(range(1, 13))
    assert cat.latest("w", "a/b").number == 12
    assert cat.get("w", "a/b", 7).manifest == f"{7:032x}"
    with pytest.raises(UnknownVersion, match="latest is 12"):
        cat.get("w", "a/b", 13)
    with pytest.raises(FileNotFoundError):
        cat.get("w", "other", 1)
    assert cat.works() == ["w"] and cat.paths("w") == ["a/b"]
    with pytest.raises(VersionExists):
        cat.create(_version(12))


def test_a_record_without_its_summary_is_read_and_a_stale_summary_is_ignored(s3_url, tmp_path):
    store = Store.open(s3_url, state=str(tmp_path / "s.db"))
    fs, cat = store.objects.fs, store.catalog
    v1, v2 = _version(1, "1" * 32), _version(2, "2" * 32)
    cat.create(v1)
    cat.create(v2)
    folder = posixpath.join(cat.dir, "w", "a%2Fb")
    for name in fs.ls(folder, detail=False):
        if not name.endswith(".json"):
            fs.rm_file(name)  # as if the writer died between record and summary
    # A summary left by a version since deleted, and one whose record is another.
    fs.pipe_file(f"{folder}/{999999999999 - 3:012d}.{'0' * 32}.{'3' * 32}.1.1.1", b"")
    fs.pipe_file(f"{folder}/{999999999999 - 2:012d}.{'0' * 32}.{'f' * 32}.1.1.1", b"")
    counts = _count_requests(fs)
    assert cat.versions("w", "a/b") == [v1, v2]
    assert cat.latest("w", "a/b") == v2
    assert counts["GetObject"] == 3  # the records themselves were read


def test_deleting_checks_the_manifest_first(memory_root):
    cat = ObjectCatalog(fsspec.filesystem("memory"), memory_root)
    v1 = _version(1, "1" * 32)
    cat.create(v1)
    cat.delete(_version(1, "9" * 32))  # a version that no longer holds number 1
    assert cat.versions("w", "a/b") == [v1]
    cat.delete(v1)
    assert cat.versions("w", "a/b") == [] and cat.latest("w", "a/b") is None
    assert cat.works() == []
    again = _version(1, "2" * 32)
    cat.create(again)  # a freed number can be claimed again, and reads back as the new one
    assert cat.versions("w", "a/b") == [again]


def test_an_older_store_format_is_refused_cleanly(memory_root, tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{memory_root}/meta.json", json.dumps({"format": 1, "store_id": "x"}).encode())
    fs.pipe_file(f"{memory_root}/catalog/w/p/000000000001.json", b"{}")
    with pytest.raises(StoreFormatError, match="store format 1, written by an older"):
        Store.open(f"memory://{memory_root}", state=str(tmp_path / "s.db"))
    assert fs.cat_file(f"{memory_root}/catalog/w/p/000000000001.json") == b"{}"  # untouched


def test_a_newer_store_format_is_refused_as_older_code_refuses_this_one(memory_root, tmp_path):
    # Format-1 code refuses this format (2) with the same check: found > what it knows.
    fs = fsspec.filesystem("memory")
    meta = {"format": FORMAT + 1, "store_id": "x"}
    fs.pipe_file(f"{memory_root}/meta.json", json.dumps(meta).encode())
    with pytest.raises(StoreFormatError, match=f"format {FORMAT + 1}, newer"):
        Store.open(f"memory://{memory_root}", state=str(tmp_path / "s.db"))


class _TerseServerFS(MemoryFileSystem):
    """A memory filesystem answering as some S3-compatible servers do (a boundary we
    cannot reach here): a create-only conflict as a bare ``OSError`` (the 412 s3fs
    does not map), and, once, a reply lost after the write took effect."""

    protocol = "terse"
    lose_next_reply = False

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        if mode == "create" and self.exists(path):
            raise OSError(errno.EINVAL, "At least one of the pre-conditions did not hold (412)")
        super().pipe_file(path, value, mode=mode, **kwargs)
        if self.lose_next_reply:
            type(self).lose_next_reply = False
            raise OSError(errno.EIO, "connection reset by peer")


def test_a_bare_412_is_a_lost_race_and_a_lost_reply_after_a_win_is_a_win(memory_root):
    fs = _TerseServerFS()
    cat = ObjectCatalog(fs, memory_root)
    cat.create(_version(1, "1" * 32))
    with pytest.raises(VersionExists):
        cat.create(_version(1, "2" * 32))
    _TerseServerFS.lose_next_reply = True
    cat.create(_version(2, "2" * 32))  # written, reply lost: reading it back shows it is ours
    assert [v.manifest for v in cat.versions("w", "a/b")] == ["1" * 32, "2" * 32]


def _count_requests(fs) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    fs.s3.meta.events.register(
        "before-send.s3", lambda event_name, **_: counts.update([event_name.split(".")[-1]])
    )
    return counts


def test_on_s3_listing_pages_answer_versions_and_latest(s3_url, tmp_path):
    store = Store.open(s3_url, state=str(tmp_path / "s.db"))
    cat = store.catalog
    for n in range(1, 6):
        cat.create(_version(n, f"{n:032x}"))
    counts = _count_requests(store.objects.fs)
    assert [v.number for v in cat.versions("w", "a/b")] == [1, 2, 3, 4, 5]
    assert cat.latest("w", "a/b").number == 5
    assert counts == {"ListObjectsV2": 2}  # no record read: every summary matched its ETag
    counts.clear()
    assert cat.get("w", "a/b", 3).manifest == f"{3:032x}"
    assert counts == {"GetObject": 1}  # version N is read by its key


def test_the_newest_versions_are_one_short_listing(s3_url, tmp_path):
    store = Store.open(s3_url, state=str(tmp_path / "s.db"))
    cat = store.catalog
    for n in range(1, 13):
        cat.create(_version(n, f"{n:032x}"))
    cat.delete(_version(11, f"{11:032x}"))  # a gap: newest(3) is 12, 10, 9
    folder = posixpath.join(cat.dir, "w", "a%2Fb")
    for name in store.objects.fs.ls(folder, detail=False):
        if name.rsplit("/", 1)[-1].startswith(f"{10**12 - 1 - 9:012d}.") and "json" not in name:
            store.objects.fs.rm_file(name)  # 9 lost its summary: its record is read
    every = cat.versions("w", "a/b")
    counts = _count_requests(store.objects.fs)
    for count in (1, 3, 11, 20):
        assert cat.newest("w", "a/b", count) == every[-count:], count
    assert cat.newest("w", "a/b", 0) == []
    assert counts == {"ListObjectsV2": 4, "GetObject": 3}  # one page each; 9 read when listed
    assert [v.number for v in store.versions("w", "a/b", newest=3)] == [9, 10, 12]
    local = Store.open(tmp_path / "local", state=str(tmp_path / "s.db"))
    for n in range(1, 4):
        local.catalog.create(_version(n, f"{n:032x}"))
    assert [v.number for v in local.versions("w", "a/b", newest=2)] == [2, 3]
    assert local.versions("w", "a/b", newest=5) == local.versions("w", "a/b")
