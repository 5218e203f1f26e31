"""The seed example: a source work makes a folder; a destination work receives it.

Run: python -m runtime run examples/seed_source_destination.py
"""

import os

from runtime import App, Flow, Work


class SourceWork(Work):
    def __init__(self):
        super().__init__()
        self.checkpoint_dir = None

    def run(self):
        self.checkpoint_dir = "lit://outputs/checkpoints"
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        for i in range(3):
            with open(os.path.join(self.checkpoint_dir, f"part{i}.txt"), "w") as out:
                out.write(f"checkpoint part {i}\n")


class DestinationWork(Work):
    def run(self, checkpoint_dir):
        files = sorted(os.listdir(checkpoint_dir))
        print(f"{self.name} received {files} in {os.getcwd()}")


class Root(Flow):
    def __init__(self):
        super().__init__()
        self.source = SourceWork()
        self.destination = DestinationWork()

    def run(self):
        self.source.run()
        self.destination.run(self.source.checkpoint_dir)


app = App(Root())
