"""Works and flows used by test_runtime.py (importable, so spawned processes find them)."""

import os
import threading
import time

from cas_storage import Path
from runtime import Flow, Work


class Producer(Work):
    def __init__(self):
        super().__init__()
        self.ckpt = "lit://outputs/ckpt"
        self.log_dir = "outputs/logs"  # a plain string: never shared
        self.pid = 0

    def run(self, content="v1", crash=None):
        self.pid = os.getpid()
        os.makedirs(self.ckpt, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        (self.ckpt / "model.bin").write_text(content)
        (self.ckpt / "cfg.json").write_text("{}")
        with open(os.path.join(self.log_dir, "log.txt"), "w") as out:
            out.write("private")
        if crash == "raise":
            raise ValueError("training diverged")


class HardExit(Work):
    def __init__(self):
        super().__init__()
        self.ckpt = "lit://outputs/ckpt"

    def run(self, exit=False):
        if exit:
            os._exit(1)  # dies mid-run: only what the earlier run persisted survives
        os.makedirs(self.ckpt, exist_ok=True)
        (self.ckpt / "model.bin").write_text("persisted before exit")


class Consumer(Work):
    """Runs a script of checks against a path from another work; records what happened."""

    def __init__(self):
        super().__init__()
        self.results = {}
        self.root_dir = ""

    def run(self, path, log_dir=None, steps=()):
        self.root_dir = os.getcwd()
        out = {"received": [r.files_transferred for _, r in self.received()]}
        for step in steps:
            try:
                if step == "exists":
                    out[step] = [path.exists_local(), path.exists_remote()]
                elif step == "read":
                    out[step] = (path / "model.bin").read_text()
                elif step.startswith("get"):
                    r = path.get(overwrite=step == "get_overwrite")
                    out[step] = [r.version, r.files_transferred, r.bytes_transferred]
                elif step == "missing":
                    Path("lit://not/there", origin=path.origin_name).get()
                elif step == "missing_exists":
                    out[step] = Path("lit://not/there", origin=path.origin_name).exists_remote()
                elif step == "log_dir":
                    out[step] = [type(log_dir).__name__, os.path.exists(log_dir)]
                elif step == "derived":
                    os.remove(path / "model.bin")
                    r = (path / "model.bin").get()
                    out[step] = [r.files_transferred, (path / "model.bin").read_text()]
            except Exception as exc:
                out[step] = f"{type(exc).__name__}: {exc}"
        self.results = out


class Sparse(Work):
    """Holds a huge sparse file: snapshotting it takes long enough to interrupt."""

    def __init__(self):
        super().__init__()
        self.pid = 0

    def run(self):
        self.pid = os.getpid()
        with open("big.bin", "wb") as out:
            out.truncate(64 * 1024**3)


class Waiter(Work):
    def __init__(self):
        super().__init__()
        self.outcome = ""
        self.seconds = 0.0

    def run(self, origin_pid, kill_after):
        if kill_after is not None:
            threading.Timer(kill_after, os.kill, (origin_pid, 9)).start()
        start = time.monotonic()
        try:
            Path("lit://big.bin", origin="root.sparse").get()
            self.outcome = "returned"
        except Exception as exc:
            self.outcome = f"{type(exc).__name__}: {exc}"
        self.seconds = time.monotonic() - start


class GetFlow(Flow):
    def __init__(self, stop_producer=False, steps=()):
        super().__init__()
        self.producer = Producer()
        self.consumer = Consumer()
        self.stop_producer = stop_producer
        self.steps = list(steps)

    def run(self):
        self.producer.run("v1")
        if self.stop_producer:
            self.producer.stop()
        self.consumer.run(self.producer.ckpt, self.producer.log_dir, self.steps)


class RaiseFlow(Flow):
    def __init__(self):
        super().__init__()
        self.producer = Producer()
        self.consumer = Consumer()

    def run(self):
        try:
            self.producer.run("made before the error", crash="raise")
        finally:
            self.consumer.run(self.producer.ckpt, None, ["read"])


class ExitFlow(Flow):
    def __init__(self):
        super().__init__()
        self.origin = HardExit()
        self.consumer = Consumer()

    def run(self):
        self.origin.run()
        try:
            self.origin.run(exit=True)
        finally:
            self.consumer.run(self.origin.ckpt, None, ["read"])


class KillFlow(Flow):
    def __init__(self, kill_after):
        super().__init__()
        self.sparse = Sparse()
        self.waiter = Waiter()
        self.kill_after = kill_after

    def run(self):
        self.sparse.run()
        self.waiter.run(self.sparse.pid, self.kill_after)


class FlowSideGet(Flow):
    def __init__(self):
        super().__init__()
        self.producer = Producer()
        self.error = ""

    def run(self):
        self.producer.run()
        try:
            self.producer.ckpt.get()
        except RuntimeError as exc:
            self.error = str(exc)


class Holder(Work):
    """Holds another work's Path as an attribute, given to its __init__; reads it in run()."""

    def __init__(self, ckpt):
        super().__init__()
        self.ckpt = ckpt
        self.seen = []

    def run(self):
        moved = [r.files_transferred for _, r in self.received()]
        content = (self.ckpt / "model.bin").read_text() if self.ckpt.exists() else None
        self.seen = [*self.seen, [self.ckpt.origin_name, moved, content]]


class Relay(Work):
    def __init__(self, ckpt):
        super().__init__()
        self.ckpt = ckpt

    def run(self):
        pass


class Serving(Flow):
    def __init__(self, ckpt):
        super().__init__()
        self.deploy = Holder(ckpt)

    def run(self):
        self.deploy.run()


class InitChainFlow(Flow):
    """A Path handed through a work's and a flow's __init__ into a third work's."""

    def __init__(self):
        super().__init__()
        self.producer = Producer()
        self.relay = Relay(self.producer.ckpt)
        self.serving = Serving(self.relay.ckpt)
        self.origins = []

    def run(self):
        self.serving.run()  # before the producer made it: passed through untransferred
        self.producer.run("v1")
        self.serving.run()
        self.producer.run("v2")
        self.serving.run()
        self.relay.run()
        self.origins = [self.relay.ckpt.origin_name, self.serving.deploy.ckpt.origin_name]
