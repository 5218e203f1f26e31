"""Snapshots beside a live writer: every recorded file is whole, never torn.

The writer rewrites files in several ``write`` calls (as a framework saving a checkpoint
does); the snapshots race it from another process. Without the quiet period a snapshot
between two writes records a torn file whose stat then looks settled. (A writer that
truncates first can be seen empty when the kernel stalls it past the quiet period, e.g.
waiting on writeback inside ``open``: the heuristic's limit, see docs/runtime.md.)
"""

import multiprocessing as mp
import os
import pathlib
import time

import pytest

from cas_storage import Store
from cas_storage.errors import SourceChanged
from cas_storage.snapshot import QUIET_SECONDS

PIECES, PIECE = 4, 256 * 1024  # 1 MiB files written a quarter at a time


def _writer(folder: str, rounds: int, ready, done) -> None:
    ready.wait()
    for step in range(1, rounds + 1):
        fill = bytes([step % 251 + 1]) * PIECE
        # In place, same size: the stat alone cannot tell a half-rewritten file.
        with open(os.path.join(folder, "inplace.bin"), "r+b") as out:
            for _ in range(PIECES):
                out.write(fill)
                out.flush()
                time.sleep(0.01)  # computing the next piece: shorter than the quiet period
        time.sleep(0.3 if step % 5 == 0 else 0.01)  # now and then quiet for long enough
    done.set()


def _whole(data: bytes) -> bool:
    return len(data) == PIECES * PIECE and data == data[:1] * len(data)


def test_snapshots_beside_a_writer_never_record_a_torn_file(tmp_path: pathlib.Path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("inplace.bin",):
        (folder / name).write_bytes(b"\x01" * PIECES * PIECE)
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_writer, args=(str(folder), 60, ready, done))
    writer.start()
    ready.set()
    snapshots = 0
    while not done.is_set():
        store.snapshot("root.train", "ckpt", folder, quiet=QUIET_SECONDS)
        snapshots += 1
    writer.join()
    assert writer.exitcode == 0
    versions = store.versions("root.train", "ckpt")
    assert len(versions) >= 5, f"too few versions to prove anything ({len(versions)})"
    for version in versions:
        out = tmp_path / "out" / str(version.number)
        store.checkout("root.train", "ckpt", out, version=version.number)
        for name in ("inplace.bin",):
            assert _whole((out / name).read_bytes()), f"v{version.number} {name} is torn"
    assert not store.verify()
    store.close()


def _toucher(path: str, seconds: float, started) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with open(path, "ab") as out:
            out.write(b"x")
        started.set()
        time.sleep(0.005)


def test_a_file_that_never_settles_is_refused_naming_it(tmp_path: pathlib.Path):
    folder = tmp_path / "logs"
    folder.mkdir()
    busy = folder / "busy.log"
    busy.write_bytes(b"start")
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    toucher = ctx.Process(target=_toucher, args=(str(busy), 30, started))
    toucher.start()
    try:
        assert started.wait(60)
        with pytest.raises(SourceChanged) as caught:
            store.snapshot("root.train", "logs", folder, quiet=QUIET_SECONDS)
        assert str(busy) in str(caught.value)
        assert store.versions("root.train", "logs") == []  # nothing half-recorded
    finally:
        toucher.kill()
        toucher.join()
        store.close()
