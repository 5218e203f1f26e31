"""Runtime overhead: starting a work, one run round trip, an unchanged get() of 1,000 files,
how soon a background run() returns, and how soon a server has a checkpoint just written.

Run: python benchmarks/bench_runtime.py [--executor ray]   (in a scratch folder it creates)

With ``--executor ray`` and no ``RAY_ADDRESS``, it starts a two-node Ray cluster on
loopback (custom resources ``node_a``/``node_b``) and, without ``CAS_STORE``, a moto
S3 server on loopback for the store; the maker runs on one node, the getter on the
other, so the get goes across nodes. It also reports the idle cluster's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Iterator

from moto_server import moto_server

from runtime import App, Flow, Work

#: ray_actor_options per work (the local executor ignores them); set to two nodes below.
PLACES: dict[str, dict] = {"maker": {}, "getter": {}}


class Maker(Work):
    def __init__(self):
        super().__init__(ray_actor_options=PLACES["maker"])
        self.folder = "lit://data"

    def run(self, files=0):
        if files:
            os.makedirs(self.folder, exist_ok=True)
            for i in range(files):
                (self.folder / f"f{i:04d}.bin").write_bytes(os.urandom(1024))


class Getter(Work):
    def __init__(self):
        super().__init__(ray_actor_options=PLACES["getter"])
        self.timings = []

    def run(self, folder, repeat=0):
        for _ in range(repeat):
            start = time.perf_counter()
            result = folder.get(overwrite=True)
            self.timings.append((time.perf_counter() - start, result.bytes_transferred))


CHECKPOINT_BYTES = 4 * 1024 * 1024
# step, wall-clock time the checkpoint was written (a format string, not a struct.Struct:
# under Ray the works of this script travel by value, with the globals they use)
HEADER = "<qd"


class Trainer(Work):
    """Saves a 4 MiB checkpoint in place every ``every`` s, stamped with its step and time."""

    def __init__(self):
        super().__init__(parallel=True, ray_actor_options=PLACES["maker"])
        self.ckpt = "lit://ckpt"

    def run(self, saves=0, every=0.5):
        os.makedirs(self.ckpt, exist_ok=True)
        model = self.ckpt / "model.bin"
        for step in range(1, saves + 1):
            time.sleep(every)
            with open(model, "r+b" if model.exists() else "wb") as out:
                out.write(
                    struct.pack(HEADER, step, time.time())
                    + bytes(CHECKPOINT_BYTES - struct.calcsize(HEADER))
                )


class Watcher(Work):
    """Polls the live trainer with get() and notes how long each new checkpoint took."""

    def __init__(self):
        super().__init__(ray_actor_options=PLACES["getter"])
        self.latencies = []

    def run(self, ckpt, saves):
        seen = 0
        while seen < saves:
            try:
                ckpt.get(overwrite=True)
            except FileNotFoundError:  # nothing saved yet
                time.sleep(0.01)
                continue
            with open(ckpt / "model.bin", "rb") as stream:
                step, written = struct.unpack(HEADER, stream.read(struct.calcsize(HEADER)))
            if step > seen:
                seen = step
                self.latencies.append(time.time() - written)
            time.sleep(0.01)


class Bench(Flow):
    def __init__(self):
        super().__init__()
        self.maker = Maker()
        self.getter = Getter()
        self.trainer = Trainer()
        self.watcher = Watcher()
        self.figures = {}

    def background(self):
        start = time.perf_counter()
        self.trainer.run()
        self.figures["background run() returns (first: + start)"] = time.perf_counter() - start
        self.trainer.wait()
        returns = []
        for _ in range(20):
            start = time.perf_counter()
            self.trainer.run()
            returns.append(time.perf_counter() - start)
            self.trainer.wait()
        self.figures["background run() returns (median of 20)"] = statistics.median(returns)
        saves = 8
        self.trainer.run(saves=saves, every=0.5)
        self.watcher.run(self.trainer.ckpt, saves)
        self.trainer.wait()
        latencies = self.watcher.latencies
        self.figures["checkpoint written -> get() has it (median of 8)"] = statistics.median(
            latencies
        )
        self.figures["checkpoint written -> get() has it (max of 8)"] = max(latencies)

    def run(self):
        start = time.perf_counter()
        self.maker.run()
        self.figures["first run (process start + round trip)"] = time.perf_counter() - start
        trips = []
        for _ in range(50):
            start = time.perf_counter()
            self.maker.run()
            trips.append(time.perf_counter() - start)
        self.figures["run round trip (median of 50)"] = statistics.median(trips)
        self.maker.run(files=1000)
        self.getter.run(self.maker.folder, repeat=0)  # first transfer happens here
        self.getter.run(self.maker.folder, repeat=20)
        seconds = [t for t, _ in self.getter.timings]
        moved = sum(b for _, b in self.getter.timings)
        self.figures["unchanged get() of 1,000 files (median of 20)"] = statistics.median(seconds)
        self.figures["bytes moved by those 20 gets"] = moved
        self.background()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="cas-rt-bench-"))
    figures = {}
    with contextlib.ExitStack() as stack:
        if args.executor == "ray":
            if not os.environ.get("CAS_STORE"):
                os.environ["CAS_STORE"] = stack.enter_context(moto_store())
            if not os.environ.get("RAY_ADDRESS"):
                os.environ["RAY_ADDRESS"] = stack.enter_context(two_nodes())
                for work, node in (("maker", "node_a"), ("getter", "node_b")):
                    PLACES[work] = {"num_cpus": 0, "resources": {node: 1}}
                time.sleep(5)  # let start-up settle before reading memory
                idle = ray_rss() / 2**20
                figures["idle cluster memory (RSS of its processes)"] = f"{idle:.0f} MiB"
        flow = Bench()
        App(flow, executor=args.executor).run()
    figures.update(flow.figures)
    print(f"executor: {args.executor}, store: {os.environ.get('CAS_STORE', './.cas')}")
    for name, value in figures.items():
        shown = f"{value * 1000:.1f} ms" if isinstance(value, float) else f"{value}"
        print(f"{name:<48} {shown}")


@contextlib.contextmanager
def two_nodes() -> Iterator[str]:
    """A two-node Ray cluster on loopback; yields its address."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    node = {"node_ip_address": "127.0.0.1", "num_cpus": 2, "object_store_memory": 100 * 2**20}
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={**node, "resources": {"node_a": 4}, "include_dashboard": False},
    )
    try:
        cluster.add_node(**node, resources={"node_b": 4})
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def ray_rss() -> int:
    """Bytes of resident memory of this process's children (the cluster; moto excluded)."""
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "moto" not in " ".join(child.cmdline()):
                total += child.memory_info().rss
    return total


@contextlib.contextmanager
def moto_store() -> Iterator[str]:
    """A moto S3 server on loopback with a bucket; yields a store URL on it."""
    with moto_server("bench"):
        yield "s3://bench/cas"


if __name__ == "__main__":
    main()
