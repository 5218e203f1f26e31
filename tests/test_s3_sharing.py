"""Several machines sharing one S3 store: each a real process with its own state file.

The server is moto over loopback, the client real s3fs: what one process writes,
the others must see through the protocol alone (no shared memory, no shared cache).
"""

from __future__ import annotations

import multiprocessing as mp
import pathlib
import queue

import pytest
from faults.faultkit import read_files, tree_for, write_exact

from cas_storage import Store

WORK, PATH = "root.train", "ckpt"
MACHINES, SNAPSHOTS = 4, 10
#: A lost race that retried forever would hang the test: fail it instead.
HANG_SECONDS = 90


def _machine(url: str, state: str, src: str, index: int, go, results) -> None:
    store = Store.open(url, state=state)
    source = pathlib.Path(src)
    source.mkdir()
    got = []
    go.wait()
    for j in range(SNAPSHOTS):
        seed = f"machine{index}-{j}"
        write_exact(source, tree_for(seed))
        got.append((store.snapshot(WORK, PATH, source).number, seed))
    results.put(got)


def _run_machines(url: str, tmp_path: pathlib.Path, target, count: int) -> list:
    """Start ``count`` processes on ``target`` together; their reports, or fail on a hang."""
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=target,
            args=(url, str(tmp_path / f"state{i}.db"), str(tmp_path / f"src{i}"), i, go, results),
        )
        for i in range(count)
    ]
    for p in procs:
        p.start()
    go.set()
    reports = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=HANG_SECONDS))
    except queue.Empty:
        raise AssertionError(
            f"only {len(reports)} of {count} machines finished within {HANG_SECONDS} s"
        ) from None
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * count
    return reports


@pytest.mark.races
def test_four_machines_snapshot_one_path_into_versions_1_to_40(s3_url, tmp_path):
    Store.open(s3_url, state=str(tmp_path / "setup.db")).close()
    reports = _run_machines(s3_url, tmp_path, _machine, MACHINES)
    claimed = [pair for report in reports for pair in report]
    total = MACHINES * SNAPSHOTS
    assert sorted(n for n, _ in claimed) == list(range(1, total + 1)), "a number was lost or reused"

    store = Store.open(s3_url, state=str(tmp_path / "reader.db"))
    versions = store.versions(WORK, PATH)
    assert [v.number for v in versions] == list(range(1, total + 1))
    seeds = dict(claimed)
    assert store.verify() == []
    for v in versions:
        out = tmp_path / "check" / str(v.number)
        store.checkout(WORK, PATH, out, version=v.number)
        assert read_files(out) == tree_for(seeds[v.number]), f"version {v.number} is wrong"


def _one_snapshot(url: str, state: str, src: str, index: int, go, results) -> None:
    store = Store.open(url, state=state)
    source = pathlib.Path(src)
    source.mkdir()
    write_exact(source, tree_for(f"other{index}"))
    go.wait()
    results.put(store.snapshot(WORK, PATH, source).number)


def test_a_long_lived_store_sees_versions_other_machines_record(s3_url, tmp_path):
    reader = Store.open(s3_url, state=str(tmp_path / "reader.db"))
    mine = write_exact_tree(tmp_path / "mine", "mine")
    assert reader.snapshot(WORK, PATH, mine).number == 1
    assert [v.number for v in reader.versions(WORK, PATH)] == [1]  # lists once, caches nothing

    assert _run_machines(s3_url, tmp_path, _one_snapshot, 1) == [2]

    assert [v.number for v in reader.versions(WORK, PATH)] == [1, 2]
    assert reader.version(WORK, PATH).number == 2
    reader.checkout(WORK, PATH, tmp_path / "out")
    assert read_files(tmp_path / "out") == tree_for("other0")
    # Its next snapshot takes the number after the other machine's, not a stale one.
    assert reader.snapshot(WORK, PATH, mine).number == 3


def write_exact_tree(root: pathlib.Path, seed: str) -> pathlib.Path:
    root.mkdir()
    write_exact(root, tree_for(seed))
    return root
