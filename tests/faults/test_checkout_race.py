"""Checkouts racing into one destination, snapshots of it meanwhile, and ``kill -9`` of ``cas get``.

* Two overwrite checkouts of different versions into one folder, started
  together, round after round: the folder ends as exactly one whole version,
  one that reported success; every other round starts from no folder at all,
  so two fresh checkouts race too.
* A third process snapshots that folder while they write: what it records
  never holds a temp or staging file, and it never fails but for the folder
  not existing yet.
* ``cas get`` killed with SIGKILL at random moments: the folder holds only
  user files, each of the old or the new version; the next checkout is exact
  and leaves nothing of ours beside the folder.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from cas_storage import Store
from faults.faultkit import read_files, tree_for, write_exact
from faults.rounds import Failed, race

pytestmark = pytest.mark.races

ROUNDS = 150
WORK, PATH = "root.train", "ckpt"
OURS = (".cas-tmp-", ".cas-staging-", ".cas-lock", ".tmp-")
_open: dict[str, Store] = {}


def _store(store_dir: str, state: str) -> Store:
    if state not in _open:
        _open[state] = Store.open(store_dir, state=state)
    return _open[state]


def _tree(seed: str) -> dict[str, bytes]:
    """A tree of many small files (every path differs between seeds: mixes show)."""
    files = tree_for(seed)
    for i in range(20):
        files[f"many/{i:02d}.txt"] = f"{seed} file {i}".encode() * 50
    return files


def _checkout(r: int, store_dir: str, state: str, dest: str, number: int) -> int:
    _store(store_dir, state).checkout(WORK, PATH, dest, version=number, overwrite=True)
    return number


def _snapshot(r: int, store_dir: str, state: str, dest: str) -> list[str]:
    time.sleep(random.uniform(0, 0.01))  # land anywhere inside the checkouts
    v = _store(store_dir, state).snapshot("root.watcher", f"seen{r}", dest)
    return [e.path for e in _store(store_dir, state).manifest(v).entries]


def _ours(names: list[str]) -> list[str]:
    return [n for n in names if any(mark in n for mark in OURS)]


def test_two_checkouts_into_one_folder_leave_one_whole_version(tmp_path):
    store_dir = str(tmp_path / ".cas")
    store = Store.open(store_dir, state=str(tmp_path / "main.db"))
    trees = {}
    for seed in ("first", "second"):
        src = tmp_path / f"src-{seed}"
        write_exact(src, _tree(seed))
        trees[store.snapshot(WORK, PATH, src).number] = _tree(seed)
    dest = tmp_path / "shared" / "dest"
    dest.parent.mkdir()
    failures: list[str] = []
    outcomes_seen: dict[str, int] = {}

    def check(r: int, outcomes: list) -> None:
        done = [o for o in outcomes[:2] if not isinstance(o, Failed)]
        errors = [o for o in outcomes[:2] if isinstance(o, Failed)]
        snap = outcomes[2]
        key = f"{len(done)} ok, " + ",".join(sorted(e.kind for e in errors))
        outcomes_seen[key] = outcomes_seen.get(key, 0) + 1
        got = read_files(dest) if dest.exists() else None
        whole = [n for n in done if got == trees[n]]
        if not done or not whole:
            failures.append(f"round {r}: {outcomes[:2]} -> folder is no version that succeeded")
        if any(e.kind not in ("TimeoutError",) for e in errors):
            failures.append(f"round {r}: a checkout failed unclearly: {errors}")
        if isinstance(snap, Failed):
            if snap.kind != "FileNotFoundError":
                failures.append(
                    f"round {r}: snapshot meanwhile failed: {snap.kind}: {snap.message}"
                )
        elif _ours(snap):
            failures.append(f"round {r}: snapshot recorded temp files {_ours(snap)}")
        beside = _ours(os.listdir(dest.parent)) + _ours(list(read_files(dest)) if got else [])
        if beside:
            failures.append(f"round {r}: left {beside}")
        if r % 2 == 1:
            _remove(dest)  # the next round races two fresh checkouts

    race(
        [
            (_checkout, (store_dir, str(tmp_path / "a.db"), str(dest), 1)),
            (_checkout, (store_dir, str(tmp_path / "b.db"), str(dest), 2)),
            (_snapshot, (store_dir, str(tmp_path / "w.db"), str(dest))),
        ],
        ROUNDS,
        check,
    )
    bad_rounds = len({f.split(":")[0] for f in failures})
    print(f"\ncheckout race: {bad_rounds} of {ROUNDS} rounds failed; outcomes {outcomes_seen}")
    assert not failures, f"{len(failures)} failures, first: {failures[0]}"
    assert store.verify() == []


def _remove(folder: pathlib.Path) -> None:
    for dirpath, dirs, _ in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o700)
    subprocess.run(["rm", "-rf", str(folder)], check=True)


KILLS = 30


def test_kill_9_of_cas_get_leaves_only_user_files_of_old_or_new(tmp_path):
    store_dir = str(tmp_path / ".cas")
    state = str(tmp_path / "state.db")
    store = Store.open(store_dir, state=state)
    trees = {}
    for seed in ("old", "new"):
        src = tmp_path / f"src-{seed}"
        files = _tree(seed)
        files["big/weights.bin"] = os.urandom(3_000_000)  # a long write to land in
        write_exact(src, files)
        trees[store.snapshot(WORK, PATH, src).number] = files
    dest = tmp_path / "out" / "dest"
    env = {**os.environ, "CAS_STATE": state}
    rng = random.Random(int(os.environ.get("CAS_FAULT_SEED", "1")))

    def start_get(number: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "cas_storage.cli", "--store", store_dir, "-q", "get",
             WORK, PATH, str(dest), "--version", str(number), "--overwrite"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    # Kill within the time a whole `cas get` takes on this machine now, so the kills land
    # inside checkouts on a quiet machine and on a loaded one alike.
    whole = []
    for number in (1, 2):
        started = time.monotonic()
        assert start_get(number).wait() == 0
        whole.append(time.monotonic() - started)
    span = min(whole)
    mixed = killed = 0
    for k in range(KILLS):
        get = start_get(1 + k % 2)
        time.sleep(rng.uniform(0.05, 0.95) * span)
        get.send_signal(signal.SIGKILL)
        code = get.wait()
        killed += code == -signal.SIGKILL
        got = read_files(dest) if dest.exists() else {}
        ours = _ours(list(got)) + _ours(os.listdir(dest)) if dest.exists() else []
        assert ours == [], f"kill {k}: our files among the user's: {ours}"
        for rel, data in got.items():
            assert data in (trees[1].get(rel), trees[2].get(rel)), f"kill {k}: {rel} is torn"
        mixed += got not in (trees[1], trees[2], {})
    print(
        f"\nkill -9 of cas get: {killed} of {KILLS} killed mid-way, {mixed} left a mix of old/new"
    )
    assert killed > KILLS // 4  # the kills really landed inside checkouts
    store.checkout(WORK, PATH, dest, version=2, overwrite=True)
    assert read_files(dest) == trees[2]
    assert _ours(os.listdir(dest.parent)) == []  # the killed ones' staging is gone too
