"""Pack files (``packs.py``): what a batch stores where, gc's repack, damage, old layouts.

The races (gc beside writers re-snapshotting old content, writers killed mid-pack)
run on packed and loose trees in ``tests/faults/test_gc_race.py``,
``tests/test_s3_gc.py`` and ``tests/faults/test_crash.py``.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sqlite3
import time

import pytest
from conftest import read_tree, write_tree

from cas_storage import Store
from cas_storage.catalog import FORMAT as CATALOG_FORMAT
from cas_storage.errors import StoreFormatError
from cas_storage.packs import PACK_MIN_OBJECTS, decode_index, encode_index

W, P = "root.train", "data"


def _files(count: int, tag: str, size: int = 3000) -> dict[str, bytes]:
    return {f"f{i:03d}.bin": (f"{tag} {i} ".encode() * size)[:size] for i in range(count)}


def _store_files(root: pathlib.Path) -> dict[str, list[str]]:
    """What lies in the store folder: pack files, index files, loose objects."""
    packs = sorted(os.listdir(root / "packs")) if (root / "packs").exists() else []
    loose = [n for _, _, names in os.walk(root / "objects") for n in names]
    return {
        "pack": [n for n in packs if n.endswith(".pack")],
        "idx": [n for n in packs if n.endswith(".idx")],
        "loose": loose,
    }


def test_an_index_says_what_is_wrong_with_it():
    entries = [("ab" * 16, 0, 10), ("cd" * 16, 10, 5)]
    data = encode_index(entries, 15)
    assert decode_index(data) == entries
    for at in (0, 9, len(data) // 2, len(data) - 1):  # magic, size, an entry, the checksum
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        with pytest.raises(ValueError, match="checksum"):
            decode_index(bytes(flipped))
    with pytest.raises(ValueError, match="cannot be"):
        decode_index(data[:-3])
    with pytest.raises(ValueError, match="past the end"):
        decode_index(encode_index(entries, 14))


def test_a_big_batch_is_one_pack_and_a_small_one_loose_files(store, tmp_path):
    src = write_tree(tmp_path / "src", _files(40, "many"))
    store.snapshot(W, P, src)
    root = pathlib.Path(store.url)
    first = _store_files(root)
    assert len(first["pack"]) == len(first["idx"]) == 1
    assert len(first["loose"]) == 1  # the manifest alone
    store.checkout(W, P, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)

    few = write_tree(tmp_path / "few", _files(PACK_MIN_OBJECTS - 1, "few"))
    store.snapshot(W, "few", few)
    after = _store_files(root)
    assert after["pack"] == first["pack"]  # no pack for a handful of objects
    assert len(after["loose"]) == 1 + PACK_MIN_OBJECTS - 1 + 1  # manifests + the files
    store.checkout(W, "few", tmp_path / "few-out")
    assert read_tree(tmp_path / "few-out") == read_tree(few)
    assert store.verify() == []


def test_gc_repacks_so_that_only_what_versions_need_stays(store, tmp_path):
    old = _files(40, "v1")
    src = write_tree(tmp_path / "src", old)
    store.snapshot(W, P, src)
    for i in range(10):  # v2: ten files changed, thirty kept
        (src / f"f{i:03d}.bin").write_bytes(f"v2 {i}".encode() * 100)
    v2 = store.snapshot(W, P, src)
    root = pathlib.Path(store.url)
    packs_before = set(_store_files(root)["pack"])

    report = store.gc(keep_last=1, grace_seconds=0)

    v1_only = sum(len(old[f"f{i:03d}.bin"]) for i in range(10))
    assert report.objects_deleted == 10 + 1  # ten blobs and the manifest of version 1
    assert report.bytes_freed > v1_only
    needed = store.manifest(v2).objects() | {v2.manifest}
    assert {d for d, _, _ in store.objects.inventory()} == needed
    assert packs_before - set(_store_files(root)["pack"]), "the v1 pack was rewritten"
    store.checkout(W, P, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert store.verify() == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_process_with_an_old_index_finds_what_gc_moved(where, tmp_path, request):
    url = tmp_path / ".cas" if where == "local" else request.getfixturevalue("s3_url")
    files = {"big.bin": os.urandom(3 * 2**20), **_files(30, "x")}
    reader = Store.open(url, state=str(tmp_path / "reader.db"))
    src = write_tree(tmp_path / "src", files)
    reader.snapshot(W, P, src)
    assert len(reader.objects.refresh_packs()) > 30  # it names the first pack, read from nothing
    (src / "f000.bin").write_bytes(b"changed")
    Store.open(url, state=str(tmp_path / "writer.db")).snapshot(W, P, src)
    # Another process drops version 1: the first pack is rewritten without f000's old blob.
    Store.open(url, state=str(tmp_path / "gc.db")).gc(keep_last=1, grace_seconds=0)
    reader.checkout(W, P, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)


def test_gc_removes_a_pack_without_an_index_only_once_it_is_old(store, tmp_path):
    store.snapshot(W, P, write_tree(tmp_path / "src", _files(20, "a")))
    packs = pathlib.Path(store.url) / "packs"
    orphan = packs / ("0" * 32 + ".pack")  # a writer died between the pack and its index
    orphan.write_bytes(b"half a batch")
    store.gc(grace_seconds=0)
    assert orphan.exists(), "a pack younger than any write could be one being written"
    old = time.time() - 2 * 3600
    for path in packs.iterdir():
        os.utime(path, (old, old))
    store.gc(grace_seconds=0)
    assert not orphan.exists()
    assert len(list(packs.glob("*.idx"))) == 1  # the indexed pack stays, old or not
    assert store.verify() == []


def test_a_damaged_index_is_reported_naming_it_and_reads_fail_cleanly(store, tmp_path):
    store.snapshot(W, P, write_tree(tmp_path / "src", _files(20, "a")))
    (index,) = (pathlib.Path(store.url) / "packs").glob("*.idx")
    data = bytearray(index.read_bytes())
    data[20] ^= 0xFF
    os.chmod(index, 0o644)
    index.write_bytes(bytes(data))

    fresh = Store.open(store.url, state=str(tmp_path / "other.db"))
    problems = fresh.verify()
    assert any(p.kind == "corrupt" and index.name in p.digest for p in problems)
    assert sum(p.kind == "missing" for p in problems) == 20  # the blobs it indexed
    assert fresh.versions(W, P)  # the catalog still reads
    with pytest.raises(FileNotFoundError, match="not in the store|missing|lacks"):
        fresh.checkout(W, P, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_store_without_packs_is_upgraded_when_opened_for_writing(tmp_path):
    url = tmp_path / ".cas"
    Store.open(url, state=str(tmp_path / "s.db")).close()
    conn = sqlite3.connect(url / "catalog.db")
    conn.execute("UPDATE meta SET value='1' WHERE key='format'")
    conn.commit()
    conn.close()

    def marker() -> str:
        with sqlite3.connect(url / "catalog.db") as c:
            return c.execute("SELECT value FROM meta WHERE key='format'").fetchone()[0]

    Store.open(url, state=str(tmp_path / "s.db"), readonly=True).close()
    assert marker() == "1", "a read-only open wrote to the store"
    Store.open(url, state=str(tmp_path / "s.db")).close()
    assert marker() == str(CATALOG_FORMAT)  # so an older cas refuses it, not misses objects


def test_an_s3_store_gets_a_packed_tree_in_a_few_requests(s3_url, tmp_path):
    src = write_tree(tmp_path / "src", _files(200, "s3", size=1000))
    Store.open(s3_url, state=str(tmp_path / "a.db")).snapshot(W, P, src)
    other = Store.open(s3_url, state=str(tmp_path / "b.db"))  # another machine
    gets = []
    other.objects.fs.s3.meta.events.register(
        "before-send.s3.GetObject", lambda **kw: gets.append(kw.get("request"))
    )
    result = other.checkout(W, P, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert result.files_transferred == 200
    # The index, the manifest and one ranged read of the neighbours (not 200 GETs).
    assert len(gets) <= 4, f"{len(gets)} GET requests for 200 packed files"


def test_an_s3_store_of_the_previous_format_is_upgraded_on_open(s3_url, tmp_path):
    import json

    store = Store.open(s3_url, state=str(tmp_path / "a.db"))
    fs, meta = store.objects.fs, f"{store.objects.root}/meta.json"
    fs.pipe_file(meta, json.dumps({**json.loads(fs.cat_file(meta)), "format": 2}).encode())
    Store.open(s3_url, state=str(tmp_path / "b.db"))
    assert json.loads(fs.cat_file(meta))["format"] == 3
    fs.pipe_file(meta, json.dumps({**json.loads(fs.cat_file(meta)), "format": 1}).encode())
    with pytest.raises(StoreFormatError, match="format 1, written by an older"):
        Store.open(s3_url, state=str(tmp_path / "c.db"))


def test_closing_a_store_closes_the_packs_it_read(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    store.snapshot(W, P, write_tree(tmp_path / "src", _files(40, "fd")))
    store.checkout(W, P, tmp_path / "out")

    def open_packs() -> list[str]:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:
                continue  # the descriptor listdir itself used
        return [link for link in links if link.startswith(f"{tmp_path}/.cas/packs/")]

    assert open_packs(), "small files are read from the pack by pread"
    store.close()
    assert open_packs() == []


def test_a_local_store_reads_neighbouring_small_files_in_one_read(tmp_path):
    """A fresh checkout of packed small files reads each run of neighbours once (not a
    system call per file), still verifies every file, and names a damaged one."""
    from cas_storage.objects import LocalObjects

    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    src = write_tree(tmp_path / "src", _files(300, "run", size=2000))
    store.snapshot(W, P, src)
    reads = []
    original = LocalObjects.read_range

    def counted(self, pack, offset, size):
        reads.append(size)
        return original(self, pack, offset, size)

    LocalObjects.read_range = counted  # counts the reads; they still happen
    try:
        result = store.checkout(W, P, tmp_path / "out")
        assert read_tree(tmp_path / "out") == read_tree(src)
        assert result.files_transferred == 300
        assert 1 <= len(reads) <= 2, f"{len(reads)} reads for 300 packed files"

        # One flipped byte in the 150th file: the run is read in one piece, yet the
        # damage is found, named, and nothing appears at the destination.
        entry = next(e for e in store.manifest(store.version(W, P)).files if e.path == "f150.bin")
        pack_file, offset, _ = store.objects.locate(entry.digest)
        with open(pack_file, "r+b") as damaged:
            damaged.seek(offset + 7)
            byte = damaged.read(1)
            damaged.seek(offset + 7)
            damaged.write(bytes([byte[0] ^ 0xFF]))
        from cas_storage.errors import CorruptObject

        with pytest.raises(CorruptObject, match=entry.digest):
            store.checkout(W, P, tmp_path / "again")
        assert not (tmp_path / "again").exists()
    finally:
        LocalObjects.read_range = original


def test_a_long_lived_s3_reader_gets_what_another_machine_packed_in_a_few_requests(
    s3_url, tmp_path
):
    """The server that keeps picking up new checkpoints: its index predates the new
    pack, yet the new files come in ranged reads, not one request per file."""
    writer = Store.open(s3_url, state=str(tmp_path / "a.db"))
    reader = Store.open(s3_url, state=str(tmp_path / "b.db"))  # another machine
    writer.snapshot(W, P, write_tree(tmp_path / "v1", _files(100, "one", size=1000)))
    reader.checkout(W, P, tmp_path / "out")  # loads its index: the first pack only
    src = write_tree(tmp_path / "v2", _files(200, "two", size=1000))
    writer.snapshot(W, P, src)
    gets = []
    reader.objects.fs.s3.meta.events.register(
        "before-send.s3.GetObject", lambda **kw: gets.append(kw.get("request"))
    )
    result = reader.checkout(W, P, tmp_path / "out", overwrite=True)
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert result.files_transferred == 200
    # The manifest, the new pack's index, one ranged read of the neighbours.
    assert len(gets) <= 4, f"{len(gets)} GET requests for 200 newly packed files"


def _pack_offsets(store: Store, entry) -> list[tuple[int, int]]:
    """(offset in its file, offset in its pack) of each packed chunk of ``entry``."""
    pairs, at = [], 0
    index = store.objects.refresh_packs()
    for digest, size in entry.chunks:
        where = index.get(digest)
        if where is not None:  # a batch of few new objects stores them loose
            pairs.append((at, where.offset))
        at += size
    return pairs


def test_a_large_files_chunks_lie_page_congruent_in_their_packs(store, tmp_path):
    """Every chunk starts in its pack at its offset in the file modulo ALIGN, whatever
    came before it (small files, a deduplicated chunk); small files are not padded;
    gc's repack keeps the placement; the checkout is the same bytes."""
    from cas_storage.packs import ALIGN

    big = os.urandom(9 * 2**20)
    src = write_tree(tmp_path / "src", {"a.txt": b"x" * 1001, "big.bin": big, **_files(20, "s")})
    v1 = store.snapshot(W, P, src)
    entry = next(e for e in store.manifest(v1).files if e.path == "big.bin")
    assert len(entry.chunks) > 4
    placed = _pack_offsets(store, entry)
    assert len(placed) == len(entry.chunks)
    assert all((f - p) % ALIGN == 0 for f, p in placed)
    index = store.objects.refresh_packs()
    chunks = {digest for digest, _ in entry.chunks}
    for pack in index.packs():  # padding comes only before a chunk of the large file
        placed = sorted(index.entries(pack), key=lambda e: e[1])
        for (_, offset, size), (digest, after, _) in itertools.pairwise(placed):
            assert after == offset + size or digest in chunks

    # v2: the file shifted by 3 bytes (new chunks at new offsets), one small file gone.
    (src / "big.bin").write_bytes(b"abc" + big)
    (src / "f000.bin").unlink()
    v2 = store.snapshot(W, P, src)
    store.gc(keep_last=1, grace_seconds=0)  # repacks the packs v1 shared with v2
    entry2 = next(e for e in store.manifest(v2).files if e.path == "big.bin")
    placed = _pack_offsets(store, entry2)  # v1's chunks, shifted by 3 bytes in the file
    assert len(placed) >= len(entry2.chunks) - 2
    # Repacked where they were (modulo ALIGN): congruent to v1's offsets, not v2's.
    assert all((f - 3 - p) % ALIGN == 0 for f, p in placed)
    store.checkout(W, P, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert store.verify() == []


def test_neighbours_apart_by_alignment_padding_are_read_in_one_read(tmp_path):
    """Two large files packed one after the other, padding between them: the
    read-ahead still fetches both in one ranged read."""
    from cas_storage.objects import LocalObjects

    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    sizes = {"a.bin": 3 * 2**19 + 5, "b.bin": 3 * 2**19 + 7}  # 1.5 MiB: one object each
    src = write_tree(tmp_path / "src", {n: os.urandom(s) for n, s in sizes.items()})
    write_tree(src, _files(20, "s"))  # enough objects for a pack
    v = store.snapshot(W, P, src)
    wanted = [(e.digest, e.size) for e in store.manifest(v).files if e.path in sizes]
    index = store.objects.refresh_packs()
    a, b = (index.get(d) for d, _ in wanted)
    assert a.pack == b.pack and 0 < b.offset - (a.offset + a.size) < 4096, "padded apart"
    reads = []
    original = LocalObjects.read_range  # what the read-ahead's runs read through

    def counted(self, pack, offset, size):
        reads.append(size)
        return original(self, pack, offset, size)

    LocalObjects.read_range = counted  # counts the reads; they still happen
    try:
        with store.objects.read_ahead(wanted) as ahead:
            for digest, size in wanted:
                assert len(ahead.read(digest)) == size
    finally:
        LocalObjects.read_range = original
    assert len(reads) == 1


def test_read_ahead_serves_any_reading_pattern_with_the_right_bytes(tmp_path, monkeypatch):
    """Whatever a reader does with the planned order — reads each, skips some, reads
    a digest twice or one that was never planned — every read returns that digest's
    bytes, with a window small enough that runs are fetched and released throughout,
    on threads (concurrency 2) and without (0)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cas_storage import objects as objects_module
    from cas_storage.objects import ReadAhead

    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    store.snapshot(W, P, write_tree(tmp_path / "a", _files(40, "a")))  # packed
    store.snapshot(W, "loose", write_tree(tmp_path / "b", _files(3, "b")))  # loose objects
    content = {}
    for path in (P, "loose"):
        manifest = store.manifest(store.latest(W, path))
        for entry in manifest.files:
            content[entry.digest] = store.objects.read(entry.digest)
    digests = sorted(content)
    assert len(store.objects.refresh_packs()) >= 40 and len(digests) == 43
    monkeypatch.setattr(objects_module, "BATCH_BYTES", 10_000)  # ~3 objects ahead
    monkeypatch.setattr(objects_module, "RUN_BYTES", 7_000)  # runs of ~2 neighbours

    @settings(max_examples=150, deadline=None)
    @given(
        wanted=st.lists(st.sampled_from(digests), max_size=60),
        steps=st.lists(st.sampled_from(["read", "skip", "stray"]), max_size=60),
        strays=st.lists(st.sampled_from(digests), min_size=1),
        concurrency=st.sampled_from([0, 2]),
    )
    def check(wanted, steps, strays, concurrency):
        plan = [(d, len(content[d])) for d in wanted]
        with ReadAhead(store.objects, plan, concurrency) as ahead:
            position = 0
            for i, step in enumerate(steps):
                if step == "stray":  # not the next planned one: later, earlier or unplanned
                    digest = strays[i % len(strays)]
                elif position < len(wanted):
                    digest = wanted[position]
                    position += 1
                    if step == "skip":
                        continue
                else:
                    break
                assert ahead.read(digest) == content[digest]

    check()
    store.close()
