"""The seed example "Share files between components", ported as a user would write it:
the flow hands the trainer's checkpoint Path into the deploy work's ``__init__``, and
deploy's ``run()`` takes no arguments. The Path keeps its first owner (the trainer), and
because deploy holds it as an attribute, the checkpoints arrive before each ``run``.

Run: python -m runtime run examples/seed_deploy_init.py
"""

import os
import pickle

from cas_storage import Path
from runtime import App, Flow, Work


class ModelTraining(Work):
    def __init__(self):
        super().__init__()
        self.model_checkpoints_path = Path("checkpoints")
        self.round = 0

    def run(self):
        # Round 1 writes both checkpoints; round 2 retrains only the second one.
        self.round += 1
        os.makedirs(self.model_checkpoints_path, exist_ok=True)
        if self.round == 1:
            self._save("checkpoint_1.ckpt", [0, 1, 2, 3, 4])
        self._save("checkpoint_2.ckpt", [0, 1, 2, 3, 4 + self.round])

    def _save(self, name, weights):
        with open(self.model_checkpoints_path / name, "wb") as out:
            pickle.dump(weights, out)


class ModelDeploy(Work):
    def __init__(self, ckpt_path):
        super().__init__()
        self.ckpt_path = ckpt_path

    def run(self):
        ckpts = sorted(os.listdir(self.ckpt_path))
        loaded = []
        for name in ckpts:
            with open(self.ckpt_path / name, "rb") as stream:
                loaded.append(pickle.load(stream))
        moved = [(r.files_transferred, r.bytes_transferred) for _, r in self.received()]
        print(
            f"{self.name} loaded {ckpts} = {loaded} from {self.ckpt_path.origin_name}; "
            f"moved (files, bytes): {moved}"
        )


class Root(Flow):
    def __init__(self):
        super().__init__()
        self.train = ModelTraining()
        self.deploy = ModelDeploy(ckpt_path=self.train.model_checkpoints_path)

    def run(self):
        for _ in range(2):
            self.train.run()
            self.deploy.run()


app = App(Root())
