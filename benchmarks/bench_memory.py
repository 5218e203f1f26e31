"""Peak memory while snapshotting and checking out one 4 GiB file (streaming check).

Run: python benchmarks/bench_memory.py   (needs ~12 GiB free disk; target < 200 MB RSS)
"""

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cas_storage import Store

d = Path(tempfile.mkdtemp(prefix="cas-mem-"))
(d / "src").mkdir()
with open(d / "src" / "big.bin", "wb") as out:
    for _ in range(1024):
        out.write(os.urandom(4 * 1024 * 1024))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = Store.open(d / ".cas", state=str(d / "state.db"))
t = time.perf_counter()
s.snapshot("w", "p", d / "src")
t1 = time.perf_counter() - t
after_snap = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
s.checkout("w", "p", d / "out")
t2 = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(
    f"4 GiB file: RSS before {base / 1024:.0f} MB, after snapshot {after_snap / 1024:.0f} MB, "
    f"after checkout {peak / 1024:.0f} MB; snapshot {t1:.1f}s, checkout {t2:.1f}s"
)
shutil.rmtree(d)
