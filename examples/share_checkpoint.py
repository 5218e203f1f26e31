"""The main job: a trainer keeps training in the background and saves a checkpoint every
few steps; a server picks up each new checkpoint from the live trainer, moving only the
layers that changed; at the end, ``cas log`` lists the versions the store recorded.

Run: python -m runtime run examples/share_checkpoint.py   (store: ./.cas, or $CAS_STORE)
"""

import json
import os
import subprocess
import sys
import time

from runtime import App, Flow, Work

LAYERS, LAYER_BYTES = 8, 2 * 1024 * 1024  # a 16 MiB checkpoint: 8 layers of 2 MiB
STEPS, SAVE_EVERY, STEP_SECONDS = 30, 5, 0.1
MIB = 1024 * 1024


class Train(Work):
    def __init__(self):
        super().__init__(parallel=True)  # run() returns at once; training goes on
        self.checkpoint = "lit://checkpoints/latest"
        self.step = 0
        self.saved_step = 0

    def run(self):
        os.makedirs(self.checkpoint, exist_ok=True)
        for step in range(1, STEPS + 1):
            time.sleep(STEP_SECONDS)  # "training"
            self.step = step
            if step % SAVE_EVERY == 0:
                self.save(step)

    def save(self, step):
        """Rewrite the checkpoint in place: every layer the first time, then two of them."""
        first = self.saved_step == 0
        changed = range(LAYERS) if first else {step % LAYERS, (step * 3 + 1) % LAYERS}
        for layer in changed:
            layer_file = self.checkpoint / f"layer{layer}.bin"
            with open(layer_file, "r+b" if layer_file.exists() else "wb") as out:
                out.write(os.urandom(LAYER_BYTES))
        with open(self.checkpoint / "meta.json", "w") as out:
            json.dump({"step": step, "changed_layers": sorted(changed)}, out)
        self.saved_step = step


class Serve(Work):
    def __init__(self):
        super().__init__()
        self.serving_step = 0

    def run(self, checkpoint):
        # The checkpoint arrived from the live trainer before run() began.
        (path, got), *_ = self.received()
        with open(path / "meta.json") as meta:
            self.serving_step = json.load(meta)["step"]
        total = sum(os.path.getsize(path / name) for name in os.listdir(path))
        print(
            f"  server: now serving step {self.serving_step:>2} (version {got.version}); "
            f"moved {got.files_transferred} files, {got.bytes_transferred / MIB:.1f} MiB "
            f"of {total / MIB:.1f} MiB"
        )


class Root(Flow):
    def __init__(self):
        super().__init__()
        self.train = Train()
        self.serve = Serve()

    def run(self):
        started = time.perf_counter()
        self.train.run()
        print(f"trainer started in the background ({time.perf_counter() - started:.2f} s)")
        while self.train.running:  # reading it refreshes train.step and train.saved_step
            if self.train.saved_step > self.serve.serving_step:
                saved = self.train.saved_step
                print(f"trainer at step {self.train.step}: new checkpoint (step {saved})")
                self.serve.run(self.train.checkpoint)
            time.sleep(0.05)
        self.train.wait()
        if self.train.saved_step > self.serve.serving_step:
            print(f"trainer done: final checkpoint of step {self.train.saved_step}")
            self.serve.run(self.train.checkpoint)
        self.train.stop()  # persists; the store now has every version the server got
        print("\n$ cas log root.train checkpoints/latest")
        sys.stdout.flush()
        subprocess.run(
            [sys.executable, "-c", "from cas_storage.cli import main; raise SystemExit(main())"]
            + ["log", "root.train", "checkpoints/latest"],
            check=True,
        )


app = App(Root())
