"""Snapshots of a folder that changes under them: never a crash, never a vanished file.

A churning process keeps writing files under temporary names, renaming them
into place and deleting others (what a trainer saving checkpoints does), while
this process snapshots the folder over and over. Every snapshot succeeds (or
reports ``SourceChanged`` naming a file that kept changing); none fails on a
file that vanished during the walk, and every recorded version checks out.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cas_storage import Store
from cas_storage.errors import SourceChanged
from faults.faultkit import read_files

CHURN = textwrap.dedent(
    """
    import os, sys, itertools
    root = sys.argv[1]
    for i in itertools.count():
        os.makedirs(os.path.join(root, f"d{i % 5}"), exist_ok=True)
        tmp = os.path.join(root, f"d{i % 5}", f".tmp-{i}")
        with open(tmp, "wb") as out:
            out.write(os.urandom(2000 + i % 3000))
        os.replace(tmp, os.path.join(root, f"d{i % 5}", f"ckpt-{i % 7}.bin"))
        if i % 3 == 0:
            try:
                os.unlink(os.path.join(root, f"d{(i + 2) % 5}", f"ckpt-{(i + 3) % 7}.bin"))
            except FileNotFoundError:
                pass
        if i % 11 == 0:
            import shutil
            shutil.rmtree(os.path.join(root, f"d{(i + 1) % 5}"), ignore_errors=True)
    """
)
SNAPSHOTS = 200


def test_snapshots_of_a_churning_folder_never_crash(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    src = tmp_path / "src"
    src.mkdir()
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(src)])
    recorded, changed = [], 0
    try:
        for _ in range(SNAPSHOTS):
            try:
                recorded.append(store.snapshot("w", "p", src))
            except SourceChanged as exc:
                assert str(src) in str(exc)
                changed += 1
    finally:
        churn.kill()
        churn.wait()
    print(f"\nchurning folder: {len(recorded)} snapshots recorded, {changed} SourceChanged")
    assert len(recorded) > SNAPSHOTS // 2
    assert store.verify() == []
    for v in store.versions("w", "p")[-20:]:
        out = tmp_path / "out" / str(v.number)
        store.checkout("w", "p", out, version=v.number)
        files = read_files(out)
        assert len(files) == v.files
        assert sum(len(b) for b in files.values()) == v.bytes
