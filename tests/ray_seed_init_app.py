"""The seed's second example (the trainer's Path handed into deploy's ``__init__``)
with its two works pinned to two Ray nodes.

Copied by the Ray tests beside ``examples/seed_deploy_init.py`` into an app folder
and run as a user would; the flow prints what it saw as one JSON line per round.
"""

from __future__ import annotations

import json
import os

import seed_deploy_init as seed
from ray_nodes import pin, where

from runtime import App, Flow


class Train(seed.ModelTraining):
    def run(self) -> None:
        seed.ModelTraining._user_run(self)
        self.where = where()


class Deploy(seed.ModelDeploy):
    def run(self) -> None:
        seed.ModelDeploy._user_run(self)  # the example's own run (see ray_seed_app.py)
        self.where = where()
        self.moved = [[r.files_transferred, r.bytes_transferred] for _, r in self.received()]
        self.files = sorted(os.listdir(self.ckpt_path))
        again = self.ckpt_path.get(overwrite=True)  # re-checks the live origin
        self.reget = [again.files_transferred, again.bytes_transferred]


class Root(Flow):
    def __init__(self) -> None:
        super().__init__()
        self.train = pin(Train(), "node_a")
        self.deploy = pin(Deploy(ckpt_path=self.train.model_checkpoints_path), "node_b")

    def run(self) -> None:
        for _ in range(2):
            self.train.run()
            self.deploy.run()
            seen = {
                "train": self.train.where,
                "deploy": self.deploy.where,
                "origin": self.deploy.ckpt_path.origin_name,
                "files": self.deploy.files,
                "moved": self.deploy.moved,
                "reget": self.deploy.reget,
            }
            print("SEEN " + json.dumps(seen), flush=True)


app = App(Root())
