"""Snapshots of a folder that changes under them: never a crash, never a vanished file.

A churning process keeps writing files under temporary names, renaming them
into place and deleting others (what a trainer saving checkpoints does), while
this process snapshots the folder over and over. Every snapshot succeeds (or
reports ``SourceChanged`` naming a file that kept changing); none fails on a
file that vanished during the walk, and every recorded version checks out.
"""

from __future__ import annotations

import os
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


def test_a_large_file_rewritten_between_two_window_reads_is_read_again(tmp_path, monkeypatch):
    """The chunker's threads read a large file window by window, at different
    moments. A rewrite between two reads (same size, so only the mtime tells) must
    not record the first windows' old bytes joined to the new: the snapshot sees
    the change and reads the file again."""
    from cas_storage import chunking

    size = 3 * chunking.WINDOW + 12345
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    big.write_bytes(b"\x01" * size)
    old = big.stat().st_mtime_ns - 10 * 10**9
    os.utime(big, ns=(old, old))  # settled long ago: read at once, and any rewrite shows

    real_cut = chunking._Windows._cut
    rewritten = []

    def cut_after_a_rewrite(self, cutter, k, buf):
        if k == 2 and not rewritten:  # windows 0 and 1 are read: rewrite under the reader
            rewritten.append(k)
            with open(big, "r+b") as out:
                out.write(b"\x02" * size)
        return real_cut(self, cutter, k, buf)

    monkeypatch.setattr(chunking._Windows, "_cut", cut_after_a_rewrite)
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    store.snapshot("w", "p", src)
    assert rewritten
    store.checkout("w", "p", tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == b"\x02" * size
    assert store.verify() == []
