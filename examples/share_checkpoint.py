"""The main job: a trainer writes a checkpoint, a deployer loads it, training goes on,
and the deployer fetches the new checkpoint — moving only what changed.

Run: python -m runtime run examples/share_checkpoint.py   (store: ./.cas)
"""

import os
import struct

from runtime import App, Flow, Work

LAYERS, LAYER_BYTES = 8, 1024 * 1024  # an 8 MiB checkpoint: 8 layers of 1 MiB


class Train(Work):
    def __init__(self):
        super().__init__()
        self.checkpoint_dir = "lit://outputs/checkpoints"
        self.round = 0

    def run(self, changed_layers):
        """Write every layer the first time; afterwards only ``changed_layers`` move."""
        self.round += 1
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        for layer in range(LAYERS):
            path = os.path.join(self.checkpoint_dir, f"layer{layer}.bin")
            if self.round == 1 or layer in changed_layers:
                seed = struct.pack("<II", self.round, layer)
                with open(path, "wb") as out:
                    out.write(os.urandom(LAYER_BYTES - len(seed)) + seed)
        with open(os.path.join(self.checkpoint_dir, "meta.txt"), "w") as out:
            out.write(f"round {self.round}\n")


class Deploy(Work):
    def __init__(self):
        super().__init__()
        self.loaded = ""

    def run(self, checkpoint_dir):
        # The checkpoint arrived before run() started, moving only what this work lacked.
        for path, got in self.received():
            print(
                f"  {path} arrived: version {got.version}, {got.files_transferred} files, "
                f"{got.bytes_transferred:,} bytes moved"
            )
        again = checkpoint_dir.get(overwrite=True)  # asks the trainer again: nothing new
        with open(os.path.join(checkpoint_dir, "meta.txt")) as meta:
            self.loaded = meta.read().strip()
        size = sum(
            os.path.getsize(os.path.join(checkpoint_dir, n)) for n in os.listdir(checkpoint_dir)
        )
        history = checkpoint_dir.versions()
        latest = history[-1]
        print(
            f"  deploy loaded {self.loaded}: {size:,} bytes on disk, version {latest.number}; "
            f"a repeated get() moved {again.files_transferred} files, "
            f"{again.bytes_transferred:,} bytes"
        )


class Root(Flow):
    def __init__(self):
        super().__init__()
        self.train = Train()
        self.deploy = Deploy()

    def run(self):
        for round_, changed in enumerate([[], [2, 5]], start=1):
            print(f"round {round_}: training" + (f", layers {changed} change" if changed else ""))
            self.train.run(changed)
            self.deploy.run(self.train.checkpoint_dir)
            print(f"  the store holds {_store_bytes():,} bytes of objects")


def _store_bytes() -> int:
    root = os.environ.get("CAS_STORE", ".cas")
    total = 0
    for folder, _, names in os.walk(os.path.join(root, "objects")):
        total += sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    return total


app = App(Root())
