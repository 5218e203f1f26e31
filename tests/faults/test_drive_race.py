"""Two works put one new Drive path at the same moment, round after round.

Each round both works (real processes, each with its own root and stat cache,
over one store) put the same new path with different content. Exactly one must
own it: its put succeeds, the other's raises ``FileExistsError`` naming the
owner, and the loser's namespace holds nothing of it.
"""

from __future__ import annotations

import pathlib

import pytest

from cas_storage import Drive, Store, context
from cas_storage.context import WorkContext
from faults.rounds import Failed, race

pytestmark = pytest.mark.races

ROUNDS = 300
DRIVE = Drive("lit://race")
_ctx: dict[str, WorkContext] = {}


def _put(r: int, store_dir: str, name: str, root: str) -> str:
    if name not in _ctx:
        store = Store.open(store_dir, state=f"{root}.state.db")
        _ctx[name] = WorkContext(name, pathlib.Path(root), store)
        context.install(_ctx[name])
    rel = f"r{r}/same.txt"
    full = pathlib.Path(root) / rel
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(f"{name} round {r}")
    DRIVE.put(rel)
    return "ok"


def test_two_works_putting_one_new_path_end_with_exactly_one_owner(tmp_path):
    store_dir = str(tmp_path / ".cas")
    store = Store.open(store_dir, state=str(tmp_path / "main.db"))
    names = ("root.a", "root.b")
    for n in names:
        (tmp_path / n).mkdir()
    failures: list[str] = []
    wins = dict.fromkeys(names, 0)

    def check(r: int, outcomes: list) -> None:
        rel = f"r{r}/same.txt"
        owners = [n for n in names if store.versions(f"drive:race/{n}", rel)]
        ok = [n for n, o in zip(names, outcomes, strict=True) if o == "ok"]
        refused = [
            (n, o)
            for n, o in zip(names, outcomes, strict=True)
            if isinstance(o, Failed) and o.kind == "FileExistsError"
        ]
        good = (
            len(owners) == 1
            and ok == owners
            and len(refused) == 1
            and owners[0] in refused[0][1].message
        )
        if not good:
            failures.append(f"round {r}: owners {owners}, outcomes {outcomes}")
        elif ok:
            wins[ok[0]] += 1

    race([(_put, (store_dir, n, str(tmp_path / n))) for n in names], ROUNDS, check)
    print(f"\ndrive race: {len(failures)} of {ROUNDS} rounds failed; wins {wins}")
    assert not failures, f"{len(failures)} of {ROUNDS} rounds failed, first: {failures[0]}"
    assert min(wins.values()) > 0  # the race really went both ways
    assert store.verify() == []
