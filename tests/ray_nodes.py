"""Helpers for the apps that the Ray tests run: pin a work to a node, say where it ran."""

from __future__ import annotations

import os

from runtime import Work


def where() -> dict[str, str]:
    """Where the calling work runs: Ray node, root, the file its code came from."""
    import ray

    return {
        "node": ray.get_runtime_context().get_node_id(),
        "root": os.getcwd(),
        "code": os.path.abspath(__file__),
    }


def pin(work: Work, node: str) -> Work:
    """Place ``work`` on the node offering the custom resource ``node``."""
    Work.__init__(work, ray_actor_options={"num_cpus": 0, "resources": {node: 1}})
    return work
