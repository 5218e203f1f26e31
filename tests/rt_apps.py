"""Works and flows used by test_runtime.py (importable, so spawned processes find them)."""

import os
import threading
import time

from cas_storage import Path
from runtime import Flow, Work, WorkFailed


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


MIB = 1024 * 1024


class BackgroundTrainer(Work):
    """Rewrites ckpt/model.bin in place every ``interval`` s, filled with the step number."""

    def __init__(self, pieces=4):
        super().__init__(parallel=True)
        self.ckpt = "lit://ckpt"
        self.step = 0
        self.pid = 0
        self.pieces = pieces

    def run(self, steps=3, interval=0.3, fail_at=None, forever=False):
        self.pid = os.getpid()
        os.makedirs(self.ckpt, exist_ok=True)
        model = self.ckpt / "model.bin"
        step = self.step
        while forever or step < steps:
            step += 1
            with open(model, "r+b" if model.exists() else "wb") as out:
                for _ in range(self.pieces):  # several writes, as a framework's save does
                    out.write(bytes([step % 251]) * MIB)
                    out.flush()
            self.step = step
            if step == fail_at:
                raise RuntimeError(f"diverged at step {step}")
            time.sleep(interval)


def checkpoint_step(path) -> int | None:
    """The step a checkpoint holds, or -1 if it is torn (not one byte value throughout)."""
    if not os.path.exists(path):
        return None
    data = open(path, "rb").read()
    if len(data) != 4 * MIB or data.count(data[:1]) != len(data):
        return -1
    return data[0]


class Server(Work):
    """Serves the trainer's latest checkpoint: it arrives before run, and get() asks again."""

    def __init__(self):
        super().__init__()
        self.served = []

    def run(self, ckpt):
        arrived = checkpoint_step(ckpt / "model.bin")
        again = None
        if arrived is not None:
            ckpt.get(overwrite=True)
            again = checkpoint_step(ckpt / "model.bin")
        self.served = [*self.served, [arrived, again]]


class TrainServeFlow(Flow):
    def __init__(self, steps):
        super().__init__()
        self.train = BackgroundTrainer()
        self.server = Server()
        self.steps = steps
        self.progress = []

    def run(self):
        self.train.run(steps=self.steps, interval=0.3)
        while self.train.running:
            self.progress.append(self.train.step)
            self.server.run(self.train.ckpt)
        self.train.wait()
        self.progress.append(self.train.step)
        self.server.run(self.train.ckpt)


class BackgroundRulesFlow(Flow):
    """run twice, wait(timeout), a failing background call: what the flow sees."""

    def __init__(self):
        super().__init__()
        self.train = BackgroundTrainer()
        self.reader = Server()
        self.seen = {}

    def run(self):
        self.train.run(steps=3, interval=0.3)
        self.seen["returned_running"] = self.train.running
        try:
            self.train.run()
        except RuntimeError as exc:
            self.seen["twice"] = str(exc)
        try:
            self.train.wait(timeout=0.01)
        except TimeoutError as exc:
            self.seen["timeout"] = str(exc)
        self.train.wait()
        self.seen["after_wait"] = [self.train.running, self.train.step]
        self.train.wait()  # nothing runs: returns at once
        self.train.run(steps=5, interval=0.05, fail_at=5)
        try:
            self.train.wait()
        except WorkFailed as exc:
            self.seen["failed"] = [exc.work, exc.details]
        self.seen["failed_step"] = self.train.step
        self.train.stop()  # from now on only its persisted versions answer
        self.reader.run(self.train.ckpt)


class LeaveRunningFlow(Flow):
    """Returns while its background work still runs: the app waits for it."""

    def __init__(self):
        super().__init__()
        self.train = BackgroundTrainer(pieces=1)

    def run(self):
        self.train.run(steps=4, interval=0.2)


class Unpicklable(Work):
    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def run(self):
        pass


class UnpicklableFlow(Flow):
    def __init__(self):
        super().__init__()
        self.holder = Unpicklable()

    def run(self):
        self.holder.run()


class NeverSetFlow(Flow):
    def __init__(self):
        super().__init__()
        self.producer = Producer()
        self.error = ""

    def run(self):
        self.producer.run()
        try:
            self.producer.accuracy  # noqa: B018 - the read is the test
        except AttributeError as exc:
            self.error = str(exc)


class ForeverFlow(Flow):
    """Trains in the background until interrupted; prints the trainer's pid once it trains."""

    def __init__(self):
        super().__init__()
        self.train = BackgroundTrainer(pieces=1)
        self.server = Server()

    def run(self):
        self.train.run(forever=True, interval=0.3)  # quiet long enough to be served live
        while self.train.step < 2:
            time.sleep(0.05)
            _ = self.train.running
        self.server.run(self.train.ckpt)  # a blocking work has a process too
        print(f"pids {self.train.pid} {os.getpid()}", flush=True)
        while True:
            _ = self.train.running
            time.sleep(0.05)
