"""gc beside snapshots, round after round, in real processes (guarantee: gc-safe snapshots).

Each round three processes start together on one store:

* ``reuser`` snapshots a folder whose big file is unchanged (the stat cache and
  the previous version vouch for its objects, so nothing re-reads or rewrites
  them) and whose small file changes every other round (so on the other rounds
  the snapshot is "unchanged → the latest version");
* ``cycler`` snapshots, into the same path, content of its *older* versions
  again (three trees in turn), so the objects it needs are ones a gc may just
  have freed;
* ``collector`` runs ``gc --keep-last 1`` with the grace under test.

After every round each version in the catalog must reference only objects that
exist; at the end every version checks out to exactly the tree it recorded and
``verify`` is clean. For the default grace, every object is backdated past it
first, as if the store were old (the objects of a long-lived checkpoint are).
"""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from cas_storage import Store
from cas_storage.gc import GRACE_SECONDS
from faults.faultkit import read_files, verify_objects, write_exact
from faults.gc_parties import PATH, WORK, cycler, open_store, reuser
from faults.rounds import Failed, race

pytestmark = pytest.mark.races

ROUNDS = 150


def _collector(r: int, store_dir: str, state: str, grace: float) -> int:
    return open_store(store_dir, state).gc(keep_last=1, grace_seconds=grace).objects_deleted


def _backdate_objects(store_dir: pathlib.Path, seconds: float) -> None:
    old = time.time() - seconds
    for folder in ("objects", "packs"):
        for dirpath, _, names in os.walk(store_dir / folder):
            for name in names:
                os.utime(os.path.join(dirpath, name), (old, old))


@pytest.mark.parametrize("grace", [0.0, GRACE_SECONDS], ids=["grace-0", "grace-default"])
def test_gc_in_a_loop_beside_writers_never_frees_what_a_version_needs(tmp_path, grace):
    store_dir = tmp_path / ".cas"
    store = Store.open(store_dir, state=str(tmp_path / "main.db"))
    reuser_src = tmp_path / "reuser"
    write_exact(reuser_src, {"big.bin": os.urandom(300_000), "step.txt": b"start"})
    time.sleep(0.05)  # past the stat cache's racy window
    reuser_state = str(tmp_path / "reuser.db")
    first = Store.open(store_dir, state=reuser_state).snapshot(WORK, PATH, reuser_src)
    (tmp_path / "cycler").mkdir()
    if grace:
        _backdate_objects(store_dir, 2 * grace)

    # manifest digest -> the tree it recorded
    trees: dict[str, dict[str, bytes]] = {first.manifest: read_files(reuser_src)}
    failures: list[str] = []
    deleted = [0]

    def check(r: int, outcomes: list) -> None:
        errors = [o for o in outcomes if isinstance(o, Failed)]
        for o in outcomes[:2]:
            if not isinstance(o, Failed):
                trees[o[0]] = o[1]
        if not isinstance(outcomes[2], Failed):
            deleted[0] += outcomes[2]
        try:
            verify_objects(store)
        except (AssertionError, FileNotFoundError) as exc:  # a missing manifest, too
            errors.append(Failed(type(exc).__name__, str(exc)))
        if errors:
            failures.append(f"round {r}: " + "; ".join(f"{e.kind}: {e.message}" for e in errors))
        if grace:
            _backdate_objects(store_dir, 2 * grace)  # everything stays "old"

    race(
        [
            (reuser, (str(store_dir), reuser_state, str(reuser_src))),
            (cycler, (str(store_dir), str(tmp_path / "cycler.db"), str(tmp_path / "cycler"))),
            (_collector, (str(store_dir), str(tmp_path / "gc.db"), grace)),
        ],
        ROUNDS,
        check,
    )
    print(
        f"\ngc race (grace {grace:g}): {len(failures)} of {ROUNDS} rounds failed, "
        f"{deleted[0]} objects deleted"
    )
    assert not failures, f"{len(failures)} of {ROUNDS} rounds failed, first: {failures[0]}"
    assert deleted[0] > 0  # gc really freed what the dropped versions held
    assert store.verify() == []
    for v in store.catalog.all_versions():
        out = tmp_path / "check" / str(v.number)
        store.checkout(WORK, PATH, out, version=v.number)
        assert read_files(out) == trees[v.manifest], f"version {v.number} is not what it recorded"
