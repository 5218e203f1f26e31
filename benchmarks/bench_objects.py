"""Per-object cost: what one object file per chunk costs against one pack file.

Writes the same N chunks (random bytes, ``--size`` KiB each) two ways, interleaved
per repetition: one object file each (``LocalObjects.put``: temp file, write,
rename), and appended to a single pack file (what restic's packs or Xet's xorbs
would cost at best). Then reads them back the same ways. Prints the median per-chunk cost of each.

Run: python benchmarks/bench_objects.py [--count 2000] [--size 512] [--repeat 3]
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

from cas_storage.hashing import digest_bytes
from cas_storage.objects import LocalObjects


def timed(action: Callable[[], object]) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512, help="KiB per chunk")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    chunks = [os.urandom(args.size * 1024) for _ in range(args.count)]
    digests = [digest_bytes(c) for c in chunks]
    scratch = Path(tempfile.mkdtemp(prefix="cas-objects-"))
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeat):
            for name in ("objects", "pack"):
                shutil.rmtree(scratch / name, ignore_errors=True)
            store = LocalObjects(str(scratch / "objects"))

            def one_by_one(store: LocalObjects = store) -> None:
                for data, digest in zip(chunks, digests, strict=True):
                    store.put(data, digest)

            def one_pack() -> None:
                (scratch / "pack").mkdir()
                with open(scratch / "pack" / "pack", "wb") as out:
                    for data in chunks:
                        out.write(data)

            def read_objects(store: LocalObjects = store) -> None:
                for digest in digests:
                    store.read(digest)

            def read_pack() -> None:
                with open(scratch / "pack" / "pack", "rb") as stream:
                    for data in chunks:
                        digest_bytes(stream.read(len(data)))

            for name, action in (
                ("write: one object file per chunk", one_by_one),
                ("write: one pack file", one_pack),
                ("read+verify: object files", read_objects),
                ("read+verify: one pack file", read_pack),
            ):
                results.setdefault(name, []).append(timed(action))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mib = args.count * args.size / 1024
    print(f"{args.count} chunks x {args.size} KiB ({mib:.0f} MiB), median of {args.repeat}")
    for name, times in results.items():
        median = statistics.median(times)
        per_chunk = median / args.count * 1e6
        print(f"  {name:<34} {median:7.3f} s  {per_chunk:7.1f} us/chunk  {mib / median:7.0f} MiB/s")


if __name__ == "__main__":
    main()
