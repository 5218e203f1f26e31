"""The stat cache's per-tree records: loaded as written, damage never believed.

A tree's record is one blob checked by one digest, so these tests damage it byte
by byte and nest trees inside each other; the snapshot and checkout tests show
the records at work (an unchanged re-put reads no file).
"""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from cas_storage.localstate import RACY_NS, Known, KnownFiles, LocalState, known_from_stat

DIGEST_A, DIGEST_B, DIGEST_C = "a" * 32, "b" * 32, "c" * 32
CHUNKS = ((DIGEST_B, 3_000_000), (DIGEST_C, 1_500_000))


def known(ino: int, digest: str, chunks: tuple[tuple[str, int], ...] = ()) -> Known:
    size = sum(n for _, n in chunks) or 10
    return Known(2049, ino, size, 10**18 + ino, 10**18 + 2 * ino, 0, digest, chunks)


@pytest.fixture()
def state(tmp_path) -> LocalState:
    return LocalState(str(tmp_path / "state.db"))


def bodies(state: LocalState) -> dict[str, bytes]:
    return dict(state.conn.execute("SELECT root, body FROM trees").fetchall())


def test_a_tree_is_loaded_as_it_was_recorded(state):
    learned = {
        "/t/a": known(1, DIGEST_A),
        "/t/big": known(2, DIGEST_A, CHUNKS),
        "/t/ünï\ncode name": known(3, DIGEST_C),
    }
    state.record_tree("/t", KnownFiles.of({}), [], learned)
    loaded = state.under("/t")
    assert loaded.root == "/t" and len(loaded) == 3
    for path, record in learned.items():
        got = loaded[path]
        assert got._replace(recorded_ns=0) == record
        assert got.recorded_ns > 0  # stamped when recorded: the racy window starts there
    assert loaded.get("/t/nothing") is None and "/t/nothing" not in loaded


def test_a_record_damaged_anywhere_is_not_believed(state):
    state.record_tree("/t", KnownFiles.of({}), [], {"/t/a": known(1, DIGEST_A, CHUNKS)})
    body = bodies(state)["/t"]
    for at in range(0, len(body), 7):
        damaged = bytearray(body)
        damaged[at] ^= 0x01
        for bad in (bytes(damaged), body[:at]):
            with state._transaction() as conn:
                conn.execute("UPDATE trees SET body = ? WHERE root = '/t'", (bad,))
            assert len(state.under("/t")) == 0, at
    # The next record of the tree replaces the damaged one.
    state.record_tree("/t", state.under("/t"), [], {"/t/b": known(2, DIGEST_B)})
    assert list(state.under("/t")) == ["/t/b"]


def test_a_record_keeps_only_the_files_still_in_the_tree(state):
    state.record_tree("/t", KnownFiles.of({}), [], {"/t/a": known(1, DIGEST_A)})
    first = state.under("/t")
    state.record_tree("/t", first, ["/t/a"], {"/t/b": known(2, DIGEST_B)})
    second = state.under("/t")
    assert sorted(second) == ["/t/a", "/t/b"]
    assert second["/t/a"] == first["/t/a"]  # kept as recorded, its stamp too
    state.record_tree("/t", second, ["/t/b"], {})  # /t/a is gone from the tree
    assert list(state.under("/t")) == ["/t/b"]


def test_nothing_is_written_when_nothing_changed(state):
    state.record_tree("/t", KnownFiles.of({}), [], {"/t/a": known(1, DIGEST_A)})
    loaded = state.under("/t")
    before = state.conn.total_changes
    state.record_tree("/t", loaded, ["/t/a"], {})
    assert state.conn.total_changes == before
    state.record_tree("/t", loaded, [], {})  # a file went: written
    assert state.conn.total_changes > before


def test_nested_trees_merge_the_nearest_record_first(state):
    state.record_tree(
        "/t", KnownFiles.of({}), [], {"/t/a": known(1, DIGEST_A), "/t/s/b": known(2, DIGEST_A)}
    )
    state.record_tree("/t/s", state.under("/t/s"), [], {"/t/s/b": known(5, DIGEST_B)})
    # The tree's own record; the one above it is older and not consulted.
    inner = state.under("/t/s")
    assert inner.root == "/t/s" and inner["/t/s/b"].digest == DIGEST_B
    # From above: the record of the tree below wins for the files in it.
    outer = state.under("/t")
    assert outer.root is None  # merged: the next record of /t is written whole
    assert outer["/t/s/b"].digest == DIGEST_B and outer["/t/a"].digest == DIGEST_A
    state.record_tree("/t", outer, list(outer), {})
    assert sorted(bodies(state)) == ["/t"]  # it replaced the record below it
    assert state.under("/t/s")["/t/s/b"].digest == DIGEST_B
    # A tree with no record of its own is known from the one it lies in; siblings are not.
    assert list(state.under("/t/s")) == ["/t/s/b"]
    assert len(state.under("/t/sibling")) == 0 and len(state.under("/t2")) == 0
    assert sorted(state.under("/")) == ["/t/a", "/t/s/b"]


def test_files_whose_record_cannot_be_stored_are_simply_not_known(state):
    odd = os.fsdecode(b"/t/latin-1 \xe9")  # a name that is not UTF-8
    learned = {odd: known(1, DIGEST_A), "/t/ok": known(2, DIGEST_B)}
    learned["/t/negative"] = known(3, DIGEST_C)._replace(ino=-1)
    state.record_tree("/t", KnownFiles.of({}), [], learned)
    assert list(state.under("/t")) == ["/t/ok"]
    state.record_tree(odd, KnownFiles.of({}), [], {odd: known(1, DIGEST_A)})
    assert len(state.under(odd)) == 0


def test_the_per_file_rows_of_the_old_layout_are_dropped(tmp_path):
    filename = str(tmp_path / "state.db")
    conn = sqlite3.connect(filename)
    conn.execute("CREATE TABLE stat_cache (path TEXT PRIMARY KEY, digest TEXT)")
    conn.execute("INSERT INTO stat_cache VALUES ('/t/a', ?)", (DIGEST_A,))
    conn.commit()
    conn.close()
    state = LocalState(filename)
    assert len(state.under("/t")) == 0
    tables = {name for (name,) in state.conn.execute("SELECT name FROM sqlite_master")}
    assert "stat_cache" not in tables and "trees" in tables


def test_a_record_is_believed_only_once_no_write_can_hide_in_its_mtime_tick(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    written = os.stat(path)
    assert written.st_mtime_ns == written.st_ctime_ns  # a write sets both to one tick
    fresh = known_from_stat(written, DIGEST_A)._replace(recorded_ns=time.time_ns())
    assert not fresh.matches(written)  # another write in this tick would not show
    aged = fresh._replace(recorded_ns=written.st_mtime_ns + RACY_NS + 1)
    assert aged.matches(written)
    time.sleep(0.02)  # (not a timing assertion: lets the timestamp tick move on)
    os.chmod(path, 0o600)  # metadata alone, as a checkout's rename of a staged file
    renamed = os.stat(path)
    assert renamed.st_ctime_ns > renamed.st_mtime_ns
    record = known_from_stat(renamed, DIGEST_A)._replace(recorded_ns=time.time_ns())
    assert record.matches(renamed)  # any later write moves the mtime past the ctime
    path.write_bytes(b"y")
    assert not record.matches(os.stat(path))


def test_matching_digest_says_what_the_record_says(tmp_path):
    """The columnar check a re-get makes of every file agrees with ``Known.matches``:
    the digest for the file as recorded, ``None`` once it changed or inside the
    racy window, or for a path without a record."""
    f = tmp_path / "f"
    f.write_bytes(b"one")
    st = os.lstat(f)
    old = known_from_stat(st, "ab" * 16)._replace(recorded_ns=time.time_ns() + 10**9 * 60)
    fresh = old._replace(recorded_ns=st.st_mtime_ns)  # recorded in the write's own tick
    for record, expected in ((old, "ab" * 16), (fresh, None)):
        files = KnownFiles.of({str(f): record})
        assert files.matching_digest(str(f), st) == expected
        assert files.matching(str(f), st) == (None if expected is None else (expected, ()))
        assert (expected is not None) == record.matches(st)
        assert files.matching_digest(str(tmp_path / "other"), st) is None
        assert files.matching(str(tmp_path / "other"), st) is None
    f.write_bytes(b"three")  # another size: changed even within one timestamp tick
    changed = os.lstat(f)
    assert KnownFiles.of({str(f): old}).matching_digest(str(f), changed) is None
    assert KnownFiles.of({str(f): old}).matching(str(f), changed) is None
    assert not old.matches(changed)


def test_all_match_is_matching_digest_for_every_file(tmp_path):
    """The stamp's one-loop check of a whole record agrees with asking
    ``matching_digest`` of each file: for files as recorded, and after each way one
    of them stops matching (content, mode, gone, replaced, inside the racy window)."""
    names = ["a", "b", "c"]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    later = time.time_ns() + 10**9 * 60

    def records() -> dict[str, Known]:
        return {
            str(tmp_path / n): known_from_stat(os.lstat(tmp_path / n), DIGEST_A)._replace(
                recorded_ns=later
            )
            for n in names
        }

    def one_by_one(files: KnownFiles) -> bool:
        try:
            return all(files.matching_digest(p, os.lstat(p)) is not None for p in files)
        except FileNotFoundError:
            return False

    recorded = records()
    files = KnownFiles.of(recorded)
    assert files.all_match() and one_by_one(files)
    racy = dict(recorded)
    racy[str(tmp_path / "b")] = recorded[str(tmp_path / "b")]._replace(recorded_ns=0)
    assert not KnownFiles.of(racy).all_match() and not one_by_one(KnownFiles.of(racy))
    changes = [
        lambda: (tmp_path / "a").write_bytes(b"A"),  # same size
        lambda: os.chmod(tmp_path / "b", 0o600),
        lambda: (os.unlink(tmp_path / "c"), (tmp_path / "c").write_bytes(b"c")),  # new inode
    ]
    for change in changes:
        change()
        assert not files.all_match() and not one_by_one(files)
        files = KnownFiles.of(records())
        assert files.all_match() and one_by_one(files)
    os.unlink(tmp_path / "c")
    assert not files.all_match() and not one_by_one(files)


def test_matching_gives_a_large_file_its_recorded_chunks(state, tmp_path):
    """An unchanged re-put takes a chunked file's entry from ``matching``: the chunk list
    must come back as recorded, also after a round trip through the stored record."""
    f = tmp_path / "big"
    f.write_bytes(b"x" * 4096)
    st = os.lstat(f)
    sizes = ((DIGEST_B, 3000), (DIGEST_C, 1096))
    record = known_from_stat(st, DIGEST_A, sizes)._replace(recorded_ns=time.time_ns() + 10**10)
    assert KnownFiles.of({str(f): record}).matching(str(f), st) == (DIGEST_A, sizes)
    state.record_tree(str(tmp_path), KnownFiles.of({}), [], {str(f): record})
    assert state.under(str(tmp_path)).matching(str(f), st) == (DIGEST_A, sizes)


def test_identities_are_given_only_for_records_that_vouch_for_each_entry():
    from cas_storage.manifest import FILE, Entry

    old = 10**18
    now = old + 10 * RACY_NS
    records = {
        "/t/a": Known(2049, 1, 10, old, old, now, DIGEST_A, ()),
        "/t/b": Known(2049, 2, 10, old, old, now, DIGEST_B, ()),
    }
    a, b = Entry("a", FILE, 0o644, 10, DIGEST_A), Entry("b", FILE, 0o755, 10, DIGEST_B)
    found = KnownFiles.of(records, "/t").identities("/t", [a, b])
    assert found == {
        "a": (0o100644, 2049, 1, 10, old, old),
        "b": (0o100755, 2049, 2, 10, old, old),
    }
    assert KnownFiles.of(records).identities("/t", [a, b._replace(digest=DIGEST_C)]) is None
    assert KnownFiles.of(records).identities("/t", [a, b._replace(path="c")]) is None
    # Written within the racy window of its record: another write may hide in its tick.
    racy = {**records, "/t/b": records["/t/b"]._replace(mtime_ns=now, ctime_ns=now)}
    assert KnownFiles.of(racy).identities("/t", [a, b]) is None
    # ... unless a later change of metadata alone (ctime past mtime) closed that tick.
    renamed = {**records, "/t/b": records["/t/b"]._replace(mtime_ns=now, ctime_ns=now + 1)}
    assert KnownFiles.of(renamed).identities("/t", [a, b]) is not None
