"""S3 benchmark: cas put/get against raw s3fs put/get of the same bytes, on a moto server.

The benchmark starts its own moto S3 server on 127.0.0.1 (real S3 protocol over
loopback) and runs, per repetition and one right after another (so a load spike
hits one repetition of every contestant, not a whole column):

* raw s3fs ``put`` of the folder to a fresh prefix, raw s3fs ``get`` of it back;
* ``Store.snapshot`` into a fresh store (fresh state file), ``Store.checkout`` on a
  "new machine" (another fresh state file), then an unchanged re-put and re-get.

Cases: ``big`` 4 x 64 MiB, ``small`` 5,000 x 4 KiB (in 50 folders). Reported:
medians, throughput ratios cas/raw (higher is better for cas), and the requests
each operation sent (counted by a botocore hook on each s3fs client). Then ``cas
log`` over a path with 1,000 versions: ``Store.versions`` as a library call (with its
requests), and ``cas --json log``, ``cas log`` (the table) and ``cas --json log -n 10``
as processes, with bytecode cached as an installed package has it.

Run: python benchmarks/bench_s3.py [--cases big,small,log] [--repeat 3] [--scale 1.0]
     (quick look: --scale 0.1 --repeat 1)
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from moto_server import moto_server

BUCKET = "bench"
CASES = ("big", "small", "log")


class Requests:
    """Counts the S3 requests sent by the s3fs clients it is attached to."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._attached: set[int] = set()

    def attach(self, fs: Any) -> None:
        """Count ``fs``'s requests (s3fs reuses instances: each is hooked once)."""
        if id(fs.s3) not in self._attached:
            self._attached.add(id(fs.s3))
            fs.s3.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> collections.Counter[str]:
        taken, self.counts = self.counts, collections.Counter()
        return taken


def make_big(root: Path, scale: float) -> None:
    root.mkdir(parents=True)
    for i in range(4):
        (root / f"shard{i}.bin").write_bytes(os.urandom(int(64 * 2**20 * scale)))


def make_small(root: Path, scale: float) -> None:
    for i in range(int(5000 * scale)):
        folder = root / f"dir{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(os.urandom(4096))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files
    )


def run_case(name: str, src: Path, work: Path, endpoint: str, repeat: int) -> None:
    import s3fs

    from cas_storage import Store

    raw = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, use_listings_cache=False)
    raw.ls(BUCKET)
    requests = Requests()
    requests.attach(raw)
    size = tree_bytes(src)
    times: dict[str, list[float]] = collections.defaultdict(list)
    counts: dict[str, collections.Counter[str]] = {}
    for rep in range(repeat):
        prefix = f"{BUCKET}/raw-{uuid.uuid4().hex}"
        out = work / f"raw-out-{rep}"
        times["raw put"].append(timed(partial(raw.put, str(src), prefix, recursive=True)))
        counts["raw put"] = requests.take()
        times["raw get"].append(timed(partial(raw.get, prefix, str(out), recursive=True)))
        counts["raw get"] = requests.take()

        url = f"s3://{BUCKET}/cas-{uuid.uuid4().hex}"
        store = Store.open(url, state=str(work / f"put-{rep}.db"))
        requests.attach(store.objects.fs)
        requests.take()
        times["cas put"].append(timed(partial(store.snapshot, "root.w", "data", src)))
        counts["cas put"] = requests.take()
        times["cas re-put"].append(timed(partial(store.snapshot, "root.w", "data", src)))
        counts["cas re-put"] = requests.take()

        reader = Store.open(url, state=str(work / f"get-{rep}.db"))  # another machine
        requests.attach(reader.objects.fs)
        requests.take()
        dest = work / f"cas-out-{rep}"
        times["cas get"].append(timed(partial(reader.checkout, "root.w", "data", dest)))
        counts["cas get"] = requests.take()
        again = partial(reader.checkout, "root.w", "data", dest, overwrite=True)
        times["cas re-get"].append(timed(again))
        counts["cas re-get"] = requests.take()
        fetched = out / src.name if (out / src.name).exists() else out
        assert same_tree(src, dest) and same_tree(src, fetched)
        for gone in (out, dest):
            shutil.rmtree(gone, ignore_errors=True)
        raw.rm(prefix, recursive=True)
        raw.rm(url[len("s3://") :], recursive=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    mib = size / 2**20
    print(f"\n== {name}: {mib:.0f} MiB, median of {repeat} ==")
    for op in ("raw put", "cas put", "cas re-put", "raw get", "cas get", "cas re-get"):
        total = sum(counts[op].values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts[op].items()))
        rate = mib / med[op]
        print(f"{op:11s} {med[op]:7.2f} s  {rate:8.1f} MiB/s  {total:6d} requests ({detail})")
    put_ratio = med["raw put"] / med["cas put"]
    get_ratio = med["raw get"] / med["cas get"]
    first = sum(counts["cas put"].values())
    print(f"throughput cas/raw: put {put_ratio:.2f}x, get {get_ratio:.2f}x")
    reput, reget = sum(counts["cas re-put"].values()), sum(counts["cas re-get"].values())
    print(
        f"unchanged re-put {reput} requests ({100 * reput / first:.1f}% of the first "
        f"put's {first}), re-get {reget} requests"
    )


def run_log(work: Path, endpoint: str, versions: int) -> None:
    from bench_store import cache_bytecode

    from cas_storage import Store
    from cas_storage.catalog import Version

    url = f"s3://{BUCKET}/log-{uuid.uuid4().hex}"
    store = Store.open(url, state=str(work / "log.db"))
    now = datetime.now(timezone.utc)
    for n in range(1, versions + 1):  # records as snapshots write them (record + summary)
        store.catalog.create(Version("root.w", "ckpt", n, f"{n:032x}", now, 3, 1000 * n))
    requests = Requests()
    requests.attach(store.objects.fs)
    requests.take()
    lib = statistics.median(timed(lambda: store.versions("root.w", "ckpt")) for _ in range(3))
    sent = requests.take()
    cache_bytecode(work)  # as installed: no compiling of cas_storage in the timed runs
    env = {**os.environ, "CAS_STATE": str(work / "cli.db")}
    cli = [sys.executable, "-m", "cas_storage.cli", "--store", url]
    log = [*cli, "--json", "log", "root.w", "ckpt"]
    subprocess.run(log, env=env, capture_output=True, check=True)  # warm: files, bytecode
    runs, tables, tens = [], [], []
    for _ in range(3):  # --json, the human table and -n 10, interleaved
        started = time.perf_counter()
        done = subprocess.run(log, env=env, capture_output=True, check=True)
        runs.append(time.perf_counter() - started)
        table = partial(subprocess.run, [*cli, "log", "root.w", "ckpt"], env=env, check=True)
        tables.append(timed(partial(table, capture_output=True)))
        ten = partial(subprocess.run, [*log, "-n", "10"], env=env, check=True)
        tens.append(timed(partial(ten, capture_output=True)))
    assert done.stdout.count(b'"version"') == versions
    start = timed(lambda: subprocess.run([*cli[:3], "--help"], capture_output=True, check=True))
    detail = ", ".join(f"{k} {v // 3}" for k, v in sorted(sent.items()))
    print(f"\n== log over {versions} versions ==")
    print(f"Store.versions: {lib:.3f} s, {sum(sent.values()) // 3} requests each ({detail})")
    print(f"`cas --json log` as a process: {statistics.median(runs):.3f} s")
    print(f"`cas log` (table) as a process: {statistics.median(tables):.3f} s")
    print(f"`cas --json log -n 10` as a process: {statistics.median(tens):.3f} s")
    print(f"(of which interpreter + import start-up, `cas --help`: {start:.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where to put local files")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=args.dir))
    with moto_server(BUCKET) as endpoint:
        try:
            cases = args.cases.split(",")
            print(f"moto at {endpoint}; python {sys.version.split()[0]}; scale {args.scale}")
            if "big" in cases:
                make_big(work / "big", args.scale)
                run_case("big (4 x 64 MiB)", work / "big", work, endpoint, args.repeat)
            if "small" in cases:
                make_small(work / "small", args.scale)
                run_case("small (5,000 x 4 KiB)", work / "small", work, endpoint, args.repeat)
            if "log" in cases:
                run_log(work, endpoint, max(10, int(1000 * args.scale)))
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
