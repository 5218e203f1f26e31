"""Two processes snapshot one folder while a third changes it, round after round.

The snapshots share this machine's local state, so their stat-cache records and
snapshot stamps interleave: a stamp may be written beside a record another process
wrote, from a walk made before a change. Whatever the interleaving, a stamp must never
vouch for a folder that is not its manifest. After each round the test snapshots the
folder itself, once nothing moves and the racy window is over: that version must be
the folder exactly, whether the stamp answered or the folder was walked.
"""

from __future__ import annotations

import pathlib
import time

import pytest
from treechanges import change_at_random, listing, sample_tree

from cas_storage import Store
from faults.rounds import Failed, race

pytestmark = pytest.mark.races

ROUNDS = 200
_stores: dict[str, Store] = {}


def _store(store_dir: str, state: str) -> Store:
    if state not in _stores:
        _stores[state] = Store.open(store_dir, state=state)
    return _stores[state]


def snapshotter(r: int, store_dir: str, state: str, src: str) -> int:
    return _store(store_dir, state).snapshot("w", "p", src).number


def changer(r: int, src: str) -> str:
    change_at_random(r, pathlib.Path(src))
    return "ok"


def test_snapshots_beside_a_changing_folder_never_leave_a_stamp_that_lies(tmp_path):
    store_dir, state = str(tmp_path / ".cas"), str(tmp_path / "state.db")
    src = sample_tree(tmp_path / "src")
    store = Store.open(store_dir, state=state)
    failures: list[str] = []
    unchanged = 0

    def check(r: int, outcomes: list) -> None:
        nonlocal unchanged
        failed = [o for o in outcomes if isinstance(o, Failed)]
        if failed:
            failures.append(f"round {r}: {failed}")
            return
        time.sleep(0.015)  # nothing moves now; past the racy window of the round's walks
        before = len(store.versions("w", "p"))
        version = store.snapshot("w", "p", src)
        unchanged += len(store.versions("w", "p")) == before
        out = tmp_path / "out" / str(r)
        store.checkout("w", "p", out, version=version.number)
        if listing(out) != listing(src):
            failures.append(f"round {r}: version {version.number} is not the folder")

    race(
        [
            (snapshotter, (store_dir, state, str(src))),
            (snapshotter, (store_dir, state, str(src))),
            (changer, (str(src),)),
        ],
        ROUNDS,
        check,
    )
    numbers = [v.number for v in store.versions("w", "p")]
    assert numbers == list(range(1, len(numbers) + 1))
    assert store.verify() == []
    store.close()
    print(f"\nstamp race: {len(failures)} of {ROUNDS} rounds failed, {len(numbers)} versions")
    assert not failures, failures[:5]
    assert unchanged >= ROUNDS // 10  # rounds whose check found the folder as recorded
