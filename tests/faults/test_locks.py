"""The store lease protocol (locks.py): create-then-check, writer preference, stale locks."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from cas_storage import Store
from cas_storage import locks as locks_module
from cas_storage.locks import LeaseLost, Locks
from cas_storage.objects import LocalObjects
from faults.faultkit import tree_for, write_exact


def _lock_files(root: pathlib.Path) -> list[str]:
    folder = root / "locks"
    return sorted(n for n in os.listdir(folder) if n.endswith(".json")) if folder.exists() else []


def test_gc_waits_for_a_snapshot_holding_the_shared_lease(tmp_path):
    locks = Locks(LocalObjects(str(tmp_path)))
    other = Locks(LocalObjects(str(tmp_path)))  # another process, as far as the records go
    order: list[str] = []
    with locks.shared("a snapshot"):
        gc = threading.Thread(target=lambda: _exclusive(other, order))
        gc.start()
        time.sleep(0.3)
        order.append("snapshot done")
    gc.join(10)
    assert order == ["snapshot done", "gc ran"]
    assert _lock_files(tmp_path) == []  # both released


def _exclusive(locks: Locks, order: list[str]) -> None:
    with locks.exclusive("gc"):
        order.append("gc ran")


def test_a_waiting_gc_holds_new_snapshots_back(tmp_path):
    """Writer preference: once gc waits, a new snapshot waits behind it."""
    first, gc_side, late = (Locks(LocalObjects(str(tmp_path))) for _ in range(3))
    order: list[str] = []
    with first.shared("long snapshot"):
        gc = threading.Thread(target=lambda: _exclusive(gc_side, order))
        gc.start()
        deadline = time.monotonic() + 5
        while not any(n.startswith("exclusive-") for n in _lock_files(tmp_path)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        newcomer = threading.Thread(target=lambda: _shared(late, order))
        newcomer.start()
        time.sleep(0.3)
        assert order == []  # neither runs while the long snapshot holds its lease
    gc.join(10)
    newcomer.join(10)
    assert order == ["gc ran", "late snapshot ran"]


def _shared(locks: Locks, order: list[str]) -> None:
    with locks.shared("late snapshot"):
        order.append("late snapshot ran")


def test_a_lock_of_a_dead_process_on_this_host_is_stale(tmp_path, monkeypatch):
    objects = LocalObjects(str(tmp_path))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    record = {
        "kind": "shared",
        "host": Locks(objects).host,
        "pid": int(dead.stdout),
        "purpose": "x",
    }
    objects.create_record("locks/shared-dead.json", json.dumps(record).encode())
    monkeypatch.setenv("CAS_LOCK_WAIT", "5")  # a live-looking lock would time out
    with Locks(objects).exclusive("gc"):
        pass
    assert _lock_files(tmp_path) == []  # the dead holder's lock was removed


def test_a_lock_from_another_host_is_stale_by_the_stores_clock(tmp_path, monkeypatch):
    objects = LocalObjects(str(tmp_path))
    record = {"kind": "shared", "host": "elsewhere", "pid": 1, "purpose": "snapshot"}
    objects.create_record("locks/shared-far.json", json.dumps(record).encode())
    monkeypatch.setenv("CAS_LOCK_WAIT", "0.3")
    with (
        pytest.raises(TimeoutError, match=r"snapshot \(pid 1 on elsewhere"),
        Locks(objects).exclusive("gc"),
    ):
        pass
    assert _lock_files(tmp_path) == ["shared-far.json"]  # the waiting gc left nothing
    old = time.time() - locks_module.STALE_SECONDS - 60
    os.utime(tmp_path / "locks" / "shared-far.json", (old, old))  # not refreshed for long
    with Locks(objects).exclusive("gc"):
        pass
    assert _lock_files(tmp_path) == []


def test_a_holder_whose_lock_was_removed_records_nothing(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    src = tmp_path / "src"
    write_exact(src, tree_for("lost"))
    with store.locks.shared("outer") as lease:
        for name in _lock_files(tmp_path / ".cas"):
            os.unlink(tmp_path / ".cas" / "locks" / name)  # as if judged stale
        with pytest.raises(LeaseLost, match="removed as stale"):
            lease.check()
        with pytest.raises(LeaseLost):
            store.snapshot("w", "p", src)  # nested: the same, lost, lease
    assert store.versions("w", "p") == []


GC_RUNS = 4


def _latest_numbers(store: Store) -> list[int]:
    return [v[-1].number if (v := store.versions("w", f"p{i}")) else 0 for i in range(3)]


def _snapshot_stream(store_dir: str, state: str, src: str, stop_file: str) -> int:
    """Snapshot one path after another until ``stop_file`` appears (or 120 s pass)."""
    store = Store.open(store_dir, state=state)
    source = pathlib.Path(src)
    count, deadline = 0, time.monotonic() + 120
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        write_exact(source, tree_for(f"stream {count % 4}"))
        store.snapshot("w", f"p{count % 3}", source)
        count += 1
        pathlib.Path(f"{src}.started").touch()
    return count


def test_gc_is_not_starved_by_a_stream_of_short_snapshots(tmp_path, monkeypatch):
    # Progress, not time: the streams run until gc has finished GC_RUNS runs among them.
    # A starved gc fails (CAS_LOCK_WAIT) instead of waiting on; a slow machine only slows both.
    store_dir, stop_file = str(tmp_path / ".cas"), str(tmp_path / "stop")
    store = Store.open(store_dir, state=str(tmp_path / "main.db"))
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pending = [
            pool.apply_async(
                _snapshot_stream,
                (store_dir, str(tmp_path / f"{i}.db"), str(tmp_path / f"s{i}"), stop_file),
            )
            for i in range(2)
        ]
        while not all(os.path.exists(tmp_path / f"s{i}.started") for i in range(2)):
            assert not any(p.ready() for p in pending), [p.get() for p in pending if p.ready()]
            time.sleep(0.05)
        monkeypatch.setenv("CAS_LOCK_WAIT", "20")
        before = _latest_numbers(store)
        for _ in range(GC_RUNS):
            store.gc(keep_last=1, grace_seconds=0)
            assert not any(p.ready() for p in pending), "a stream ended while gc ran"
        pathlib.Path(stop_file).touch()
        counts = [p.get(60) for p in pending]
    assert sum(_latest_numbers(store)) > sum(before) and min(counts) >= 2  # snapshots went on
    assert store.verify() == []
