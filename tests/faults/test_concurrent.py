"""Guarantees 2 and 6: many writers at once, gc beside writers, locks held by dead processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cas_storage import Store
from faults.faultkit import read_files, tree_for, verify_objects, write_exact

pytestmark = pytest.mark.races

WRITERS, SNAPSHOTS = 8, 25
WORK, PATH = "root.train", "ckpt"


def _writer(store_dir: str, state: str, src: str, index: int, go, results) -> None:
    store = Store.open(store_dir, state=state)
    source = pathlib.Path(src)
    source.mkdir()
    got = []
    go.wait()
    for j in range(SNAPSHOTS):
        seed = f"writer{index}-{j}"
        write_exact(source, tree_for(seed))
        got.append((store.snapshot(WORK, PATH, source).number, seed))
    results.put(got)


def test_eight_writers_make_exactly_200_versions_without_gaps(tmp_path):
    store_dir, state = str(tmp_path / ".cas"), str(tmp_path / "state.db")
    Store.open(store_dir, state=state).close()
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    writers = [
        ctx.Process(
            target=_writer, args=(store_dir, state, str(tmp_path / f"src{i}"), i, go, results)
        )
        for i in range(WRITERS)
    ]
    for w in writers:
        w.start()
    go.set()
    reported = [pair for _ in writers for pair in results.get(timeout=120)]
    for w in writers:
        w.join(timeout=30)
        assert w.exitcode == 0
    total = WRITERS * SNAPSHOTS
    assert sorted(n for n, _ in reported) == list(range(1, total + 1)), "a number was reused"

    store = Store.open(store_dir, state=state)
    versions = store.versions(WORK, PATH)
    assert [v.number for v in versions] == list(range(1, total + 1))
    seeds = dict(reported)
    verify_objects(store)
    for v in versions:
        got = tmp_path / "check" / str(v.number)
        store.checkout(WORK, PATH, got, version=v.number)
        assert read_files(got) == tree_for(seeds[v.number]), f"version {v.number} is wrong"
    print(f"\nconcurrent: {WRITERS} writers x {SNAPSHOTS} -> {len(versions)} versions, 1..{total}")


HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sys.argv[2])
    print("locked", flush=True)
    time.sleep(600)
    """
)


def _killed_while_holding(db: str, sql: str) -> None:
    """Start a process that takes the write lock of ``db``, then SIGKILL it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, db, sql], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_store_locked_by_a_killed_writer_does_not_block(tmp_path):
    store_dir, state = tmp_path / ".cas", str(tmp_path / "state.db")
    store = Store.open(store_dir, state=state)
    src = tmp_path / "src"
    src.mkdir()
    write_exact(src, tree_for("before"))
    store.snapshot(WORK, PATH, src)
    store.checkout(WORK, PATH, tmp_path / "dest")
    # A writer dies mid-transaction on the catalog, then one dies holding the stat cache.
    _killed_while_holding(
        str(store_dir / "catalog.db"),
        f"INSERT INTO versions VALUES ('{WORK}', '{PATH}', 2, '{'ab' * 16}', 0, 1, 1)",
    )
    _killed_while_holding(state, "DELETE FROM trees")
    write_exact(src, tree_for("after"))
    started = time.monotonic()
    fresh = Store.open(store_dir, state=state)
    version = fresh.snapshot(WORK, PATH, src)
    fresh.checkout(WORK, PATH, tmp_path / "dest", overwrite=True)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"the next writer waited {elapsed:.1f}s on a dead process's lock"
    # The dead writer's uncommitted row never appears; the new version takes number 2.
    assert version.number == 2 and version.manifest != "ab" * 16
    assert read_files(tmp_path / "dest") == tree_for("after")
    assert os.path.exists(str(store_dir / "catalog.db"))


def test_a_lock_held_too_long_is_a_clear_timeout_not_a_hang(tmp_path):
    store_dir, state = tmp_path / ".cas", str(tmp_path / "state.db")
    store = Store.open(store_dir, state=state)
    src = tmp_path / "src"
    src.mkdir()
    write_exact(src, tree_for("waiting"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store_dir / "catalog.db"), "DELETE FROM meta"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        store.catalog.conn.execute("PRAGMA busy_timeout=300")  # instead of the default 60 s
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="catalog.db.*locked"):
            store.snapshot(WORK, PATH, src)
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    assert store.snapshot(WORK, PATH, src).number == 1  # and proceeds once it is released


def _snapshot_loop(store_dir: str, state: str, src: str, index: int, seconds: float) -> int:
    """Snapshot a tree that keeps one old file and changes one new file, for ``seconds``."""
    store = Store.open(store_dir, state=state)
    source = pathlib.Path(src)
    source.mkdir()
    (source / "shared.bin").write_bytes(b"base weights " * 20_000)  # reused by every version
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        (source / "step.txt").write_text(f"writer {index} step {count}")
        store.snapshot(f"root.w{index}", PATH, source)
        count += 1
    return count


def test_gc_beside_snapshots_never_frees_what_a_version_needs(tmp_path: pathlib.Path):
    """Guarantee 2b: snapshot and gc at the same time; every surviving version checks out."""
    store_dir = str(tmp_path / ".cas")
    store = Store.open(store_dir, state=str(tmp_path / "main.db"))
    ctx = mp.get_context("spawn")
    seconds, grace = 6.0, 1.0
    with ctx.Pool(3) as pool:
        pending = [
            pool.apply_async(
                _snapshot_loop,
                (store_dir, str(tmp_path / f"s{i}.db"), str(tmp_path / f"src{i}"), i, seconds),
            )
            for i in range(3)
        ]
        freed = 0
        while not all(p.ready() for p in pending):  # beside the writers, however late they start
            freed += store.gc(keep_last=1, grace_seconds=grace).objects_deleted
            time.sleep(0.05)
        counts = [p.get(timeout=120) for p in pending]
    time.sleep(grace)  # what the last rounds dropped is past the grace now
    freed += store.gc(keep_last=1, grace_seconds=grace).objects_deleted
    assert min(counts) > 5 and freed > 0  # both sides really ran, and gc really deleted
    assert store.verify() == []
    for i in range(3):
        out = tmp_path / f"out{i}"
        store.checkout(f"root.w{i}", PATH, out)
        assert (out / "shared.bin").read_bytes() == b"base weights " * 20_000
