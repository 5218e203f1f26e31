"""A writer to be killed: snapshots ever-new trees and checks each one out again.

Run as a script (``python crash_child.py STORE STATE SRC DEST TAG OUT``) or call
``run`` in a forked child. After each finished snapshot it appends
``"<version> <seed>"`` to OUT, after each finished checkout ``"checkout <version>"``
— written with one unbuffered ``os.write`` so the parent sees exactly what finished.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faultkit import mixed_tree, write_exact  # noqa: E402

from cas_storage import Store  # noqa: E402

WORK, PATH = "root.train", "ckpt"


def run(store_dir: str, state: str, src: str, dest: str, tag: str, out: str) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        store = Store.open(store_dir, state=state)
        source = pathlib.Path(src)
        source.mkdir(parents=True, exist_ok=True)
        for i in itertools.count():
            seed = f"{tag}-{i}"
            write_exact(source, mixed_tree(seed))
            version = store.snapshot(WORK, PATH, source)
            os.write(fd, f"{version.number} {seed}\n".encode())
            if i % 2:  # every other time a fresh checkout (built aside, renamed into place)
                shutil.rmtree(dest, ignore_errors=True)
            store.checkout(WORK, PATH, dest, overwrite=True)
            os.write(fd, f"checkout {version.number}\n".encode())
    except BaseException:
        os.write(fd, ("error " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
        raise


if __name__ == "__main__":
    run(*sys.argv[1:7])
