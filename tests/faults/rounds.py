"""Racing parties in real processes, started together round after round.

``race(parties, rounds, check)`` spawns one process per party. Every round, all
parties and the test wait on one barrier, then each runs its function once
(``fn(round, *args)``) and reports what it returned (or the exception it
raised, as ``Failed``); the test's ``check(round, outcomes)`` then judges the
round before the next one starts. Party functions live at module level of an
importable module, so spawned children can find them.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ROUND_TIMEOUT = 60.0


@dataclass(frozen=True)
class Failed:
    """What a party raised in a round: the exception's type name and message."""

    kind: str
    message: str
    trace: str = ""


def _party(index: int, fn: Callable[..., Any], args: tuple, rounds: int, barrier, out) -> None:
    for r in range(rounds):
        barrier.wait(ROUND_TIMEOUT)
        try:
            result: Any = fn(r, *args)
        except Exception as exc:  # noqa: BLE001 - every failure is the round's result
            result = Failed(type(exc).__name__, str(exc), traceback.format_exc())
        out.put((index, r, result))


def race(
    parties: Sequence[tuple[Callable[..., Any], tuple]],
    rounds: int,
    check: Callable[[int, list[Any]], None],
) -> None:
    """Run ``rounds`` rounds of ``parties`` at once; ``check`` sees each round's outcomes."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(parties) + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_party, args=(i, fn, args, rounds, barrier, out), daemon=True)
        for i, (fn, args) in enumerate(parties)
    ]
    for p in procs:
        p.start()
    try:
        for r in range(rounds):
            barrier.wait(ROUND_TIMEOUT)
            outcomes: list[Any] = [None] * len(parties)
            for _ in parties:
                index, got_round, result = out.get(timeout=ROUND_TIMEOUT)
                assert got_round == r
                outcomes[index] = result
            check(r, outcomes)
    finally:
        for p in procs:
            p.kill()
            p.join(5)
