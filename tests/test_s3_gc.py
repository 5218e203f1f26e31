"""gc on a shared S3 store, beside writers on other "machines" (processes, own state).

The lease protocol (``locks.py``) keeps its lock records in the bucket and judges
them by the server's clock; here it must hold over the S3 protocol alone. Grace
0 throughout: S3 times cannot be backdated, and with no grace at all only the
protocol stands between gc and an object a snapshot is about to reference.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pathlib
import time

import pytest
from faults.faultkit import read_files, write_exact
from faults.gc_parties import PATH, WORK, cycler, open_store, reuser
from faults.rounds import Failed, race

from cas_storage import Store

ROUNDS = 20
SNAPSHOTS = 8


def _lost_objects(store: Store) -> list[str]:
    """Every object a recorded version references and the store lacks."""
    lost = []
    for v in store.catalog.all_versions():
        try:
            needed = store.manifest(v).objects()
        except FileNotFoundError:
            lost.append(f"{v.work}:{v.path} v{v.number}: manifest {v.manifest}")
            continue
        lost += [f"{v.work}:{v.path} v{v.number}: {d}" for d in store.objects.missing(needed)]
    return lost


def _collector(r: int, url: str, state: str) -> int:
    return open_store(url, state).gc(keep_last=1, grace_seconds=0).objects_deleted


@pytest.mark.races
def test_dropped_content_resnapshotted_while_gc_runs_on_s3(s3_url, tmp_path):
    store = Store.open(s3_url, state=str(tmp_path / "main.db"))
    reuser_src = tmp_path / "reuser"
    write_exact(reuser_src, {"big.bin": os.urandom(300_000), "step.txt": b"start"})
    time.sleep(0.05)  # past the stat cache's racy window
    reuser_state = str(tmp_path / "reuser.db")
    first = Store.open(s3_url, state=reuser_state).snapshot(WORK, PATH, reuser_src)
    (tmp_path / "cycler").mkdir()
    trees: dict[str, dict[str, bytes]] = {first.manifest: read_files(reuser_src)}
    failures: list[str] = []
    deleted = [0]

    def check(r: int, outcomes: list) -> None:
        errors = [f"{o.kind}: {o.message}" for o in outcomes if isinstance(o, Failed)]
        for o in outcomes[:2]:
            if not isinstance(o, Failed):
                trees[o[0]] = o[1]
        if not isinstance(outcomes[2], Failed):
            deleted[0] += outcomes[2]
        errors += _lost_objects(store)
        if errors:
            failures.append(f"round {r}: " + "; ".join(errors))

    race(
        [
            (reuser, (s3_url, reuser_state, str(reuser_src))),
            (cycler, (s3_url, str(tmp_path / "cycler.db"), str(tmp_path / "cycler"))),
            (_collector, (s3_url, str(tmp_path / "gc.db"))),
        ],
        ROUNDS,
        check,
    )
    assert not failures, f"{len(failures)} of {ROUNDS} rounds failed, first: {failures[0]}"
    assert deleted[0] > 0  # gc really freed what the dropped versions held
    assert store.verify() == []
    for v in store.catalog.all_versions():
        out = tmp_path / "check" / str(v.number)
        store.checkout(WORK, PATH, out, version=v.number)
        assert read_files(out) == trees[v.manifest], f"version {v.number} is not what it recorded"


def _writer(url: str, state: str, src: str, index: int, go, results) -> None:
    store = Store.open(url, state=state)
    source = pathlib.Path(src)
    source.mkdir()
    (source / "shared.bin").write_bytes(b"base weights " * 20_000)  # in every version
    go.wait()
    recorded = []
    for step in range(SNAPSHOTS):
        (source / "step.txt").write_text(f"writer {index} step {step}")
        recorded.append(store.snapshot(f"root.w{index}", PATH, source).manifest)
    results.put((index, recorded))


@pytest.mark.races
def test_gc_in_a_loop_beside_writers_on_s3_leaves_every_kept_version_whole(s3_url, tmp_path):
    store = Store.open(s3_url, state=str(tmp_path / "gc.db"))
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    writers = 2
    procs = [
        ctx.Process(
            target=_writer,
            args=(s3_url, str(tmp_path / f"s{i}.db"), str(tmp_path / f"src{i}"), i, go, results),
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    go.set()
    freed = runs = 0
    while any(p.is_alive() for p in procs) and results.qsize() < writers:
        freed += store.gc(keep_last=2, grace_seconds=0).objects_deleted
        runs += 1
    reports = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * writers
    freed += store.gc(keep_last=2, grace_seconds=0).objects_deleted
    assert runs > 1 and freed > 0
    assert store.verify() == []
    for i in range(writers):
        kept = store.versions(f"root.w{i}", PATH)
        assert [v.manifest for v in kept] == reports[i][-2:]  # the last two, whole
        for v in kept:
            out = tmp_path / "out" / f"{i}-{v.number}"
            store.checkout(f"root.w{i}", PATH, out, version=v.number)
            assert (out / "shared.bin").read_bytes() == b"base weights " * 20_000
            assert (out / "step.txt").read_text() == f"writer {i} step {v.number - 1}"
