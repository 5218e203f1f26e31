"""Drive figures: put/get against `cp -r`, a re-put after one change, and get(timeout) latency.

Run: .venv/bin/python benchmarks/bench_drive.py [--mb 100]
Times are noisy on a shared machine: compare the ratios printed in one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cas_storage import Drive, Store, context  # noqa: E402
from cas_storage.context import WorkContext  # noqa: E402


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _waiter(store_dir: str, root: str, drive_id: str, n: int, ready, done) -> None:
    store = Store.open(store_dir, state=os.path.join(root, "..", "waiter.db"))
    context.install(WorkContext("root.waiter", pathlib.Path(root), store))
    drive = Drive(drive_id)
    for i in range(n):
        ready.put(i)
        drive.get(f"ping{i}.txt", timeout=30)
        done.put(time.time())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100, help="size of the folder put")
    args = parser.parse_args()
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench_drive_"))
    try:
        store_dir = str(base / ".cas")
        store = Store.open(store_dir, state=str(base / "a.db"))
        a_root, b_root = base / "a", base / "b"
        data = a_root / "data"
        data.mkdir(parents=True)
        b_root.mkdir()
        small = max(args.mb // 2, 1)
        for i in range(small):
            (data / f"f{i:03}.bin").write_bytes(os.urandom(1 << 20))
        (data / "big.bin").write_bytes(os.urandom((args.mb - small) << 20))
        drive = Drive("lit://bench")
        a = WorkContext("root.a", a_root, store)
        b = WorkContext("root.b", b_root, Store.open(store_dir, state=str(base / "b.db")))

        t_cp, _ = _timed(lambda: subprocess.run(["cp", "-r", str(data), str(base / "cp")]))
        with context.installed(a):
            t_put, v1 = _timed(lambda: drive.put("data"))
        with context.installed(b):
            t_get, r1 = _timed(lambda: drive.get("data"))
        (data / "f000.bin").write_bytes(os.urandom(1 << 20))
        before = set(store.objects)
        with context.installed(a):
            t_put2, v2 = _timed(lambda: drive.put("data"))
        new = set(store.objects) - before
        new_bytes = sum(store.objects.size(d) for d in new)
        with context.installed(b):
            t_get2, r2 = _timed(lambda: drive.get("data", overwrite=True))
        print(f"folder: {small} x 1 MiB + 1 x {args.mb - small} MiB")
        print(f"cp -r            {t_cp:7.3f} s")
        print(f"put (first)      {t_put:7.3f} s  ({t_put / t_cp:.2f} x cp)  version {v1.number}")
        print(
            f"get (fresh)      {t_get:7.3f} s  ({t_get / t_cp:.2f} x cp)  "
            f"{r1.files_transferred} files, {r1.bytes_transferred} bytes"
        )
        print(
            f"put (1 changed)  {t_put2:7.3f} s  ({t_put2 / t_cp:.2f} x cp)  version {v2.number}, "
            f"{len(new)} new objects, {new_bytes} bytes"
        )
        print(
            f"get (1 changed)  {t_get2:7.3f} s  ({t_get2 / t_cp:.2f} x cp)  "
            f"{r2.files_transferred} files, {r2.bytes_transferred} bytes"
        )

        # How long after a put returns does a waiting get(timeout=...) in another process return?
        n = 12
        spawn = mp.get_context("spawn")
        ready, done = spawn.Queue(), spawn.Queue()
        w_root = base / "w"
        w_root.mkdir()
        proc = spawn.Process(
            target=_waiter, args=(store_dir, str(w_root), drive.id, n, ready, done)
        )
        proc.start()
        delays = []
        with context.installed(a):
            for i in range(n):
                ready.get(timeout=60)
                time.sleep(random.uniform(0.2, 1.5))  # the waiter is somewhere in its back-off
                (a_root / f"ping{i}.txt").write_text(str(i))
                drive.put(f"ping{i}.txt")
                put_done = time.time()
                delays.append(done.get(timeout=60) - put_done)
        proc.join(30)
        print(
            f"get(timeout) sees a put after: median {statistics.median(delays) * 1000:.0f} ms, "
            f"max {max(delays) * 1000:.0f} ms (n={n})"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
