"""The seed's first example with its two works pinned to two Ray nodes.

The Ray tests copy this file beside ``examples/seed_source_destination.py`` into
an app folder and run it as a user would (``python -m runtime run``), so the
folder is the code that Ray ships to the nodes. Each work records where it ran;
the flow prints what it saw as one JSON line.
"""

from __future__ import annotations

import json
import os
from typing import Any

import seed_source_destination as seed
from ray_nodes import pin, where

from runtime import App, Flow


# The example's own run, called directly: a Work subclass's ``super().run()`` goes
# back to the app (Work replaces ``run`` on every class that defines one).
class Source(seed.SourceWork):
    def run(self) -> None:
        seed.SourceWork._user_run(self)
        self.where = where()


class Destination(seed.DestinationWork):
    def run(self, checkpoint_dir: Any) -> None:
        seed.DestinationWork._user_run(self, checkpoint_dir)
        self.where = where()
        self.received_bytes = sum(r.bytes_transferred for _, r in self.received())
        self.files = {
            name: (checkpoint_dir / name).read_text() for name in sorted(os.listdir(checkpoint_dir))
        }
        again = checkpoint_dir.get(overwrite=True)  # re-checks the live origin
        self.reget = [again.files_transferred, again.bytes_transferred]


class Root(Flow):
    def __init__(self) -> None:
        super().__init__()
        self.source = pin(Source(), "node_a")
        self.destination = pin(Destination(), "node_b")

    def run(self) -> None:
        self.source.run()
        self.destination.run(self.source.checkpoint_dir)
        seen = {
            "source": self.source.where,
            "destination": self.destination.where,
            "files": self.destination.files,
            "received_bytes": self.destination.received_bytes,
            "reget": self.destination.reget,
        }
        print("SEEN " + json.dumps(seen), flush=True)


app = App(Root())
