"""Two processes check a folder out while a third changes it, round after round.

The checkouts share this machine's local state and take turns under the folder's lock,
each leaving a stamp of what it wrote (``stamps.stamp_of_checkout``), while the third
process changes the folder with no lock at all: a change may land between a checkout's
last write and its stamp, or just after the stamp. Whatever the interleaving, a stamp
must never vouch for a folder that is not its version. After each round the test gets
the latest version into the folder itself, once nothing moves and the racy window is
over: the folder must then be that version exactly, whether the stamp answered or the
folder was walked.
"""

from __future__ import annotations

import os
import pathlib
import random
import time

import pytest
from treechanges import change_at_random, listing, sample_tree

from cas_storage import Store
from cas_storage import checkout as checkout_module
from faults.rounds import Failed, race

pytestmark = pytest.mark.races

ROUNDS = 200
_stores: dict[str, Store] = {}


def getter(r: int, store_dir: str, state: str, dest: str) -> int:
    """The latest version mostly, the first now and then: some rounds write a lot."""
    if state not in _stores:
        _stores[state] = Store.open(store_dir, state=state)
    version = 1 if random.Random(r * 7 + os.getpid()).random() < 0.3 else None
    return _stores[state].checkout("w", "p", dest, version=version, overwrite=True).version


def changer(r: int, dest: str) -> str:
    change_at_random(r, pathlib.Path(dest))
    return "ok"


def test_checkouts_beside_a_changing_folder_never_leave_a_stamp_that_lies(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    store_dir, state = str(tmp_path / ".cas"), str(tmp_path / "state.db")
    src = sample_tree(tmp_path / "src")
    store = Store.open(store_dir, state=state)
    store.snapshot("w", "p", src)
    (src / "a.txt").write_text("version 2")
    os.symlink("a.txt", src / "second-link")
    assert store.snapshot("w", "p", src).number == 2
    wanted = listing(src)
    dest = tmp_path / "dest"
    store.checkout("w", "p", dest)
    answered = 0
    held_since_stamp = checkout_module._held_since_stamp

    def counting(*args):  # type: ignore[no-untyped-def]
        nonlocal answered
        held = held_since_stamp(*args)
        answered += held
        return held

    monkeypatch.setattr(checkout_module, "_held_since_stamp", counting)
    failures: list[str] = []

    def check(r: int, outcomes: list) -> None:
        failed = [o for o in outcomes if isinstance(o, Failed)]
        if failed:
            failures.append(f"round {r}: {failed}")
            return
        time.sleep(0.015)  # nothing moves now; past the racy window of the round's writes
        store.checkout("w", "p", dest, overwrite=True)
        if listing(dest) != wanted:
            failures.append(f"round {r}: the folder is not version 2 after a get of it")
            store.checkout("w", "p", dest, overwrite=True)  # next round from a clean start

    race(
        [
            (getter, (store_dir, state, str(dest))),
            (getter, (store_dir, state, str(dest))),
            (changer, (str(dest),)),
        ],
        ROUNDS,
        check,
    )
    assert store.verify() == []
    store.close()
    print(f"\ncheckout stamp race: {len(failures)} of {ROUNDS} rounds failed, {answered} answered")
    assert not failures, failures[:5]
    assert answered >= ROUNDS // 10  # rounds whose final get the stamp answered
