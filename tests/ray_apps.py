"""Apps for the Ray executor's tests: the runtime tests' works, pinned to two nodes."""

from __future__ import annotations

from typing import Any

import rt_apps

from runtime import Work


def on(node: str) -> dict[str, Any]:
    """``ray_actor_options`` that place a work on ``node`` (a custom resource of one node)."""
    return {"num_cpus": 0, "resources": {node: 1}}


class KillOnTwoNodes(rt_apps.KillFlow):
    """The origin on one node, killed while it snapshots for a waiter on the other."""

    def __init__(self, kill_after: float | None) -> None:
        super().__init__(kill_after)
        Work.__init__(self.sparse, ray_actor_options=on("node_a"))
        Work.__init__(self.waiter, ray_actor_options=on("node_b"))
