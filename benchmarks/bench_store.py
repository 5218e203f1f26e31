"""Store benchmark: snapshot + checkout against `cp -r` and `rsync -a`, in one run.

Datasets: (a) 4 files x 256 MiB, (b) 20,000 files x 4 KiB in 200 folders, and
(c) a re-checkout of an unchanged version. Each timing is the median of
``--repeat`` runs; the figures that matter are the ratios, since the machine's
disk and page cache make absolute times noisy.

Run: python benchmarks/bench_store.py [--scale 1.0] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cas_storage import Store


def make_large(root: Path, scale: float) -> None:
    root.mkdir(parents=True)
    size = int(256 * 1024 * 1024 * scale)
    for i in range(4):
        with open(root / f"shard{i}.bin", "wb") as out:
            left = size
            while left:
                block = os.urandom(min(left, 8 * 1024 * 1024))
                out.write(block)
                left -= len(block)


def make_small(root: Path, scale: float) -> None:
    count = int(20_000 * scale)
    for i in range(count):
        folder = root / f"dir{i % 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05d}.bin").write_bytes(os.urandom(4096))


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def median_time(setup: Callable[[], None], action: Callable[[], object], repeat: int):
    times, result = [], None
    for _ in range(repeat):
        setup()
        elapsed, result = timed(action)
        times.append(elapsed)
    return statistics.median(times), result


def bench(name: str, src: Path, scratch: Path, repeat: int) -> list[tuple]:
    rows = []
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "out"

    def clear() -> None:
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(["sync"], check=True)  # start each run with no dirty pages queued

    cp, _ = median_time(clear, lambda: subprocess.run(["cp", "-r", src, out], check=True), repeat)
    rsync, _ = median_time(
        clear, lambda: subprocess.run(["rsync", "-a", f"{src}/", f"{out}/"], check=True), repeat
    )

    stores: list[Store] = []

    def fresh_store() -> None:
        clear()
        store_dir = scratch / "store"
        shutil.rmtree(store_dir, ignore_errors=True)
        state = scratch / "state.db"
        for leftover in scratch.glob("state.db*"):
            leftover.unlink()
        stores.append(Store.open(store_dir, state=str(state)))

    snap, version = median_time(
        fresh_store, lambda: stores[-1].snapshot("bench", "data", src), repeat
    )
    store = stores[-1]
    co, result = median_time(clear, lambda: store.checkout("bench", "data", out), repeat)
    again, unchanged = median_time(
        lambda: None, lambda: store.checkout("bench", "data", out, overwrite=True), repeat
    )
    rows.append((name, "cp -r", cp, 1.0, ""))
    rows.append((name, "rsync -a", rsync, rsync / cp, ""))
    rows.append((name, "snapshot", snap, snap / cp, f"{version.files} files"))
    rows.append((name, "checkout", co, co / cp, f"{result.bytes_transferred:,} B moved"))
    rows.append(
        (name, "re-checkout (c)", again, again / cp, f"{unchanged.bytes_transferred:,} B moved")
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the datasets (0.1 = 10%)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    if not shutil.which("rsync"):
        raise SystemExit("rsync is needed for the comparison: apt-get install rsync")
    scratch = Path(tempfile.mkdtemp(prefix="cas-bench-", dir=args.dir))
    try:
        rows = []
        large, small = scratch / "large-src", scratch / "small-src"
        make_large(large, args.scale)
        rows += bench("(a) 4 x 256 MiB", large, scratch / "a", args.repeat)
        shutil.rmtree(large)
        make_small(small, args.scale)
        rows += bench("(b) 20,000 x 4 KiB", small, scratch / "b", args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'dataset':<20} {'operation':<16} {'seconds':>8} {'x cp -r':>8}  note")
    for name, op, seconds, ratio, note in rows:
        print(f"{name:<20} {op:<16} {seconds:8.3f} {ratio:8.2f}  {note}")


if __name__ == "__main__":
    main()
