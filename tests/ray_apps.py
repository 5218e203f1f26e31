"""Apps for the Ray executor's tests: the runtime tests' works, pinned to two nodes."""

from __future__ import annotations

import os
import time
from typing import Any

import rt_apps

from runtime import Flow, Work


def on(node: str) -> dict[str, Any]:
    """``ray_actor_options`` that place a work on ``node`` (a custom resource of one node)."""
    return {"num_cpus": 0, "resources": {node: 1}}


class KillOnTwoNodes(rt_apps.KillFlow):
    """The origin on one node, killed while it snapshots for a waiter on the other."""

    def __init__(self, kill_after: float | None) -> None:
        super().__init__(kill_after)
        Work.__init__(self.sparse, ray_actor_options=on("node_a"))
        Work.__init__(self.waiter, ray_actor_options=on("node_b"))


class Trainer(Work):
    """Trains in the background on node_a: a checkpoint file rewritten every step."""

    def __init__(self) -> None:
        super().__init__(parallel=True, ray_actor_options=on("node_a"))
        self.ckpt = "lit://ckpt"
        self.step = 0

    def run(self, steps: int | None = None) -> None:
        os.makedirs(self.ckpt, exist_ok=True)
        step = 0
        while steps is None or step < steps:  # None: until stopped
            step += 1
            (self.ckpt / "model.bin").write_text(f"step {step}")
            self.step = step
            time.sleep(0.4)  # quiet long enough between writes for a snapshot to read it


class Server(Work):
    """Fetches the trainer's checkpoint on node_b; records which step each get brought."""

    def __init__(self) -> None:
        super().__init__(ray_actor_options=on("node_b"))
        self.seen: list[int] = []

    def run(self, ckpt: Any) -> None:
        ckpt.get(overwrite=True)
        self.seen.append(int((ckpt / "model.bin").read_text().split()[1]))


class BackgroundOnTwoNodes(Flow):
    """A trainer running in the background while a server on the other node fetches.

    With ``steps=None`` the trainer runs until the flow stops it, once the server has
    fetched three different steps from the running trainer (or after 300 tries).
    """

    def __init__(self, steps: int | None) -> None:
        super().__init__()
        self.trainer = Trainer()
        self.server = Server()
        self.steps = steps
        self.polled: list[int] = []

    def run(self) -> None:
        self.trainer.run(self.steps)
        for _ in range(300):
            if not self.trainer.running:
                break
            self.polled.append(self.trainer.step)
            if self.trainer.step:
                self.server.run(self.trainer.ckpt)
            if self.steps is None and len(set(self.server.seen)) >= 3:
                break
        if self.steps is None:
            self.trainer.stop()  # interrupts the endless run; persists
        else:
            self.trainer.wait()
        self.server.run(self.trainer.ckpt)  # the last checkpoint, live or persisted
