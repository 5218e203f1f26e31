"""A real two-node Ray cluster on this machine, every socket on loopback.

Imported by ``conftest.py``; Ray itself is imported only when a test asks for
the cluster, so the core suite runs without the ``ray`` extra.

Both nodes share this machine's filesystem, so the tests prove "another
machine" by what differs per node: Ray's node id, the folder a work's root is
in, the copy of the app's code that Ray shipped to the node.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

#: Per-node custom resources: pin a work with ray_actor_options={"resources": {"node_a": 1}}.
NODE_A = {"node_a": 4}
NODE_B = {"node_b": 4}


#: Small nodes: the machine has 2 cores, and others run tests beside us.
NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 2, "object_store_memory": 100 * 1024**2}


@contextlib.contextmanager
def cluster(root: str, *more_nodes: dict[str, float]) -> Iterator[str]:
    """A Ray cluster on loopback: a head (``node_a``) plus one node per ``more_nodes``.

    Works on nodes other than the head keep their roots below ``root``
    (``CAS_WORK_ROOTS``, read by the nodes' processes, which inherit this
    environment). Yields the address; shuts everything down at the end.
    """
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "CAS_WORK_ROOTS")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["CAS_WORK_ROOTS"] = root
    from ray.cluster_utils import Cluster

    started = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={**NODE, "resources": NODE_A, "include_dashboard": False},
    )
    try:
        for resources in more_nodes:
            started.add_node(**NODE, resources=resources)
        started.wait_for_nodes()
        yield started.address
    finally:
        started.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two nodes, ``node_a`` (the head) and ``node_b``; yields the address."""
    with cluster(str(tmp_path_factory.mktemp("node-roots")), NODE_B) as address:
        yield address


@pytest.fixture(scope="session")
def ray_one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node cluster (a local store is fine there): the runtime tests under Ray."""
    with cluster(str(tmp_path_factory.mktemp("one-node-roots"))) as address:
        yield address


@pytest.fixture
def ray_address(ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Apps in this test connect to the two-node cluster (``RAY_ADDRESS``)."""
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    return ray_cluster
