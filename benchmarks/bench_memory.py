"""Peak memory while snapshotting and checking out one large file (streaming check).

Run: python benchmarks/bench_memory.py [--gib 4] [--dir DIR]
(needs about three times the file's size free on disk; target < 200 MB RSS)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cas_storage import Store


def rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=4, help="size of the file (GiB)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    if args.gib < 1:
        parser.error("--gib must be at least 1")
    scratch = Path(tempfile.mkdtemp(prefix="cas-mem-", dir=args.dir))
    try:
        (scratch / "src").mkdir()
        with open(scratch / "src" / "big.bin", "wb") as out:
            for _ in range(256 * args.gib):
                out.write(os.urandom(4 * 1024 * 1024))
        base = rss_mb()
        store = Store.open(scratch / ".cas", state=str(scratch / "state.db"))
        started = time.perf_counter()
        store.snapshot("w", "p", scratch / "src")
        put_s = time.perf_counter() - started
        after_put = rss_mb()
        started = time.perf_counter()
        store.checkout("w", "p", scratch / "out")
        get_s = time.perf_counter() - started
        store.close()
        print(
            f"{args.gib} GiB file: RSS before {base:.0f} MB, after snapshot {after_put:.0f} MB, "
            f"after checkout {rss_mb():.0f} MB; snapshot {put_s:.1f}s, checkout {get_s:.1f}s"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
