"""The seed example on a Ray cluster: the source work on one node, the destination on another.

Start two nodes offering the custom resources ``node_a`` and ``node_b`` and point the
works at a store both reach (docs/cluster.md), then:

    CAS_STORE=s3://bucket/prefix RAY_ADDRESS=HEAD:6379 \\
        python -m runtime run examples/cluster_seed.py --executor ray
"""

import os

import ray

from runtime import App, Flow, Work


def node() -> str:
    return ray.get_runtime_context().get_node_id()[:8]


class SourceWork(Work):
    def __init__(self):
        super().__init__(ray_actor_options={"num_cpus": 1, "resources": {"node_a": 1}})
        self.checkpoint_dir = "lit://outputs/checkpoints"

    def run(self):
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        for i in range(3):
            with open(os.path.join(self.checkpoint_dir, f"part{i}.txt"), "w") as out:
                out.write(f"checkpoint part {i}\n")
        print(f"{self.name} wrote 3 files on node {node()} in {os.getcwd()}")


class DestinationWork(Work):
    def __init__(self):
        super().__init__(ray_actor_options={"num_cpus": 1, "resources": {"node_b": 1}})

    def run(self, checkpoint_dir):
        moved = sum(result.bytes_transferred for _, result in self.received())
        files = sorted(os.listdir(checkpoint_dir))
        print(f"{self.name} received {files} ({moved} bytes) on node {node()} in {os.getcwd()}")
        again = checkpoint_dir.get(overwrite=True)
        print(f"{self.name} asked again: {again.bytes_transferred} bytes moved")


class Root(Flow):
    def __init__(self):
        super().__init__()
        self.source = SourceWork()
        self.destination = DestinationWork()

    def run(self):
        self.source.run()
        self.destination.run(self.source.checkpoint_dir)


app = App(Root())
