"""Guarantee 1: a writer killed at any moment loses nothing that was committed.

A child snapshots ever-new trees of one ``(work, path)`` and checks each out
again, and is SIGKILLed after a random delay — during imports, ``Store.open``,
object writes, the catalog commit, the stat-cache update or a checkout. Most
children are forked from this process (cheap, so many kills fit in CI time);
some are fresh interpreters running ``crash_child.py``, so kills also land
while a store is being opened or created. Afterwards:

* every version a child reported as finished is in the catalog with that
  number and checks out byte-identical to the tree it was made from;
* every other version the catalog lists checks out byte-identical too (a kill
  after the commit but before the report loses the report, not the version);
* every object every manifest references exists and hashes right;
* leftovers (object temp files, checkout temp files, SQLite -wal/-shm) never
  blocked the next writer, and the stale ones can be cleaned away.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from cas_storage import Store
from faults import crash_child
from faults.faultkit import (
    all_temp_files,
    mixed_tree,
    read_files,
    tree_for,
    verify_objects,
    write_exact,
)

FORKED_KILLS = 60
SCRIPT_KILLS = 6


def _reports(out: str) -> tuple[dict[int, str], list[str]]:
    finished: dict[int, str] = {}
    errors = []
    with open(out) as stream:
        for line in stream:
            if not line.endswith("\n"):
                continue  # cut off by the kill: that report was never finished
            if line.startswith("error"):
                errors.append(line)
            elif not line.startswith("checkout"):
                number, seed = line.split()
                assert finished.setdefault(int(number), seed) == seed, f"v{number} reused"
    return finished, errors


def _kill_forked(rng: random.Random, *writers: tuple[str, ...]) -> None:
    """Fork one child per writer (they run at once), then kill each at its own moment."""
    pids = []
    for args in writers:
        pid = os.fork()
        if pid == 0:  # the child: work until killed; never return into pytest
            try:
                crash_child.run(*args)
            finally:
                os._exit(1)
        pids.append(pid)
    for pid, args in zip(pids, writers, strict=True):
        time.sleep(rng.uniform(0.001, 0.15))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"writer {args[4]} stopped on its own: status {status}"


def _kill_script(rng: random.Random, args: tuple[str, ...]) -> None:
    child = subprocess.Popen([sys.executable, crash_child.__file__, *args])
    time.sleep(rng.uniform(0.05, 0.9))  # imports and Store.open take a good part of this
    child.kill()
    assert child.wait() == -signal.SIGKILL, f"writer {args[4]} stopped on its own"


@pytest.mark.races
def test_writers_killed_at_random_moments_lose_nothing(tmp_path):
    seed = int(os.environ.get("CAS_FAULT_SEED", time.time_ns() % 10**9))
    print(f"\nreplay with CAS_FAULT_SEED={seed}")  # shown by pytest when the test fails
    rng = random.Random(seed)
    store_dir, state = str(tmp_path / ".cas"), str(tmp_path / "state.db")
    dest, out = tmp_path / "dest", str(tmp_path / "reports.txt")
    kills = 0
    for round_ in range(FORKED_KILLS + SCRIPT_KILLS):
        args = (store_dir, state, str(tmp_path / f"src{round_}"), str(dest), f"r{round_}", out)
        # Script kills come first: the store may not exist yet, so open/create gets killed too.
        if round_ < SCRIPT_KILLS:
            _kill_script(rng, args)
        elif round_ % 4:
            _kill_forked(rng, args)
        else:  # a second writer of the same path at once, so kills also land mid-contention
            other = (store_dir, state, str(tmp_path / f"src{round_}b"), str(tmp_path / "dest-b"))
            _kill_forked(rng, args, (*other, f"r{round_}b", out))
            kills += 1
        kills += 1
    finished, errors = _reports(out)
    assert errors == [], "a writer failed instead of being killed:\n" + "\n".join(errors)
    assert len(finished) >= FORKED_KILLS // 2, "too few snapshots finished to prove anything"

    store = Store.open(store_dir, state=state)
    versions = store.versions(crash_child.WORK, crash_child.PATH)
    numbers = [v.number for v in versions]
    assert numbers == list(range(1, len(numbers) + 1)), "version numbers have gaps"
    assert set(finished) <= set(numbers), "a finished version was lost"
    objects_checked = verify_objects(store)
    for v in versions:
        got = tmp_path / "check" / str(v.number)
        store.checkout(crash_child.WORK, crash_child.PATH, got, version=v.number)
        files = read_files(got)
        seed = files["seed.txt"].decode()
        assert files == mixed_tree(seed), f"version {v.number} differs from its tree {seed}"
        assert finished.get(v.number, seed) == seed, f"version {v.number} holds the wrong tree"

    # Leftovers never block the next writer: it snapshots, and an overwrite checkout
    # into the destination the killed writers were updating comes out exact. Folders
    # that killed fresh checkouts were building beside it are removed once stale.
    beside = [n for n in os.listdir(tmp_path) if ".cas-tmp-" in n]
    for name in beside:
        os.utime(tmp_path / name, (time.time() - 7200, time.time() - 7200))
    after = tree_for("after-the-kills")
    write_exact(tmp_path / "src-after", after)
    last = store.snapshot(crash_child.WORK, crash_child.PATH, tmp_path / "src-after")
    assert last.number == len(numbers) + 1
    store.checkout(crash_child.WORK, crash_child.PATH, dest, overwrite=True)
    assert read_files(dest) == after
    assert all_temp_files(dest) == [], "an overwrite checkout kept a killed writer's temp file"
    store.checkout(crash_child.WORK, crash_child.PATH, tmp_path / "dest-b", overwrite=True)
    assert [n for n in os.listdir(tmp_path) if ".cas-tmp-" in n] == []

    # Stale object temp files are only garbage: cleaning them leaves every version intact.
    stale = store.objects.remove_stale_temps(older_than=0)
    assert all_temp_files(tmp_path / ".cas") == []
    verify_objects(store)
    print(
        f"\ncrash: {kills} kills, {len(finished)} reported + "
        f"{len(numbers) - len(finished)} unreported versions all intact, "
        f"{objects_checked} objects verified, {stale} stale object temp files and "
        f"{len(beside)} half-built checkout folders removed"
    )


def test_stale_object_temp_files_are_removed_only_when_old(store, tmp_path):
    digest = store.objects.put(b"payload")
    base = store.objects.path(digest)
    old, fresh = f"{base}.tmp-dead01", f"{base}.tmp-live02"
    for name in (old, fresh):
        with open(name, "wb") as out:
            out.write(b"pay")  # a writer died (or is still writing) half-way
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.objects.put(b"payload") == digest and list(store.objects) == [digest]
    assert store.objects.remove_stale_temps() == 1
    assert not os.path.exists(old) and os.path.exists(fresh)  # a live writer keeps its file
    assert store.objects.read(digest) == b"payload"


def test_half_built_checkouts_beside_a_destination_are_removed_only_when_old(store, tmp_path):
    src = tmp_path / "src"
    write_exact(src, tree_for("leftovers"))
    store.snapshot("w", "p", src)
    old_dir, old_file = tmp_path / ".dest.cas-tmp-dead01", tmp_path / "dest.cas-tmp-dead02"
    live = tmp_path / ".dest.cas-tmp-live03"
    for folder in (old_dir / "locked", live):
        folder.mkdir(parents=True)
    (old_dir / "locked" / "half.bin").write_bytes(b"half")
    os.chmod(old_dir / "locked", 0o500)  # a manifest's read-only folder, half-built
    old_file.write_bytes(b"half")
    for leftover in (old_dir, old_file):
        os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    store.checkout("w", "p", tmp_path / "dest")
    assert read_files(tmp_path / "dest") == tree_for("leftovers")
    assert not old_dir.exists() and not old_file.exists()
    assert live.exists()  # may belong to a checkout still running
