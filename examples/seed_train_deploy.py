"""The seed example: a training work saves checkpoints, a deploy work loads them.

Run: python -m runtime run examples/seed_train_deploy.py
"""

import os
import pickle

from runtime import App, Flow, Work


class ModelTraining(Work):
    def __init__(self):
        super().__init__()
        self.checkpoint_dir = "lit://outputs/checkpoints"

    def run(self):
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        for name, weights in (
            ("checkpoint_1.ckpt", [0, 1, 2, 3, 4]),
            ("checkpoint_2.ckpt", [5, 6]),
        ):
            with open(os.path.join(self.checkpoint_dir, name), "wb") as out:
                pickle.dump(weights, out)


class ModelDeploy(Work):
    def run(self, checkpoint_dir):
        names = sorted(os.listdir(checkpoint_dir))
        checkpoints = []
        for name in names:
            with open(os.path.join(checkpoint_dir, name), "rb") as stream:
                checkpoints.append(pickle.load(stream))
        print(f"loaded {len(checkpoints)} checkpoints: {checkpoints}")


class Root(Flow):
    def __init__(self):
        super().__init__()
        self.train = ModelTraining()
        self.deploy = ModelDeploy()

    def run(self):
        self.train.run()
        self.deploy.run(checkpoint_dir=self.train.checkpoint_dir)


app = App(Root())
