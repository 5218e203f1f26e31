"""Dedup benchmark: a checkpoint series stored and moved at about the cost of what changed.

Series: a file of 64 tensors x 4 MiB (raw float32 bytes), 8 versions, each changing
3 tensors; then the same series with a header that grows by a few bytes each
version (shifting every tensor). Reports stored/logical bytes, bytes moved per get
of the next version (vs bytes changed), snapshot/checkout time against cp -r, and
chunk+hash throughput of one 1 GiB file.

Run: python benchmarks/bench_dedup.py [--tensors 64] [--versions 8]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cas_storage import Store, chunking
from cas_storage.hashing import digest_bytes

TENSOR = 4 * 1024 * 1024


def checkpoints(tensors: int, versions: int, growing_header: bool):
    """Yield (checkpoint bytes, bytes changed since the previous version)."""
    rng = random.Random(7)
    data = [os.urandom(TENSOR) for _ in range(tensors)]
    for v in range(versions):
        changed = 0
        if v:
            for i in rng.sample(range(tensors), 3):
                data[i] = os.urandom(TENSOR)
                changed += TENSOR
        header = b"{" + b'"step": 1000,' * (v if growing_header else 0) + b"}\n"
        yield header + b"".join(data), changed + (len(header) if v else 0)


def series(name: str, scratch: Path, tensors: int, versions: int, growing: bool) -> None:
    store = Store.open(scratch / f"store-{name}", state=str(scratch / f"state-{name}.db"))
    src, dest = scratch / f"train-{name}", scratch / f"serve-{name}"
    src.mkdir()
    logical = moved_total = changed_total = 0
    snap_t = co_t = cp_t = 0.0
    worst = 0.0
    for v, (blob, changed) in enumerate(checkpoints(tensors, versions, growing)):
        (src / "model.ckpt").write_bytes(blob)
        start = time.perf_counter()
        version = store.snapshot("train", "ckpt", src)
        snap_t += time.perf_counter() - start
        start = time.perf_counter()
        r = store.checkout("train", "ckpt", dest, overwrite=True)
        co_t += time.perf_counter() - start
        shutil.rmtree(scratch / "cp", ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(scratch / "cp")], check=True)
        cp_t += time.perf_counter() - start
        logical += version.bytes
        if v:
            moved_total += r.bytes_transferred
            changed_total += changed
            worst = max(worst, r.bytes_transferred / changed)
    stored = store.stats().stored_bytes
    print(f"\n{name}: {versions} versions of {tensors} x 4 MiB, 3 tensors change per version")
    print(f"  stored / logical bytes        {stored / logical:6.3f}  (target <= 0.2)")
    print(
        f"  moved / changed bytes per get {moved_total / changed_total:6.3f}  "
        f"(worst {worst:.3f}, target <= 1.3)"
    )
    print(f"  snapshot time / cp -r         {snap_t / cp_t:6.2f}  (all versions)")
    print(f"  checkout time / cp -r         {co_t / cp_t:6.2f}")


def throughput(scratch: Path) -> None:
    path = scratch / "one-gib.bin"
    with open(path, "wb") as out:
        for _ in range(256):
            out.write(os.urandom(4 * 1024 * 1024))
    with open(path, "rb") as stream:  # warm the page cache
        while stream.read(64 * 1024 * 1024):
            pass
    start = time.perf_counter()
    with open(path, "rb") as stream:
        count = sum(1 for piece in chunking.chunks(stream) if digest_bytes(piece))
    seconds = time.perf_counter() - start
    print(
        f"\nchunk + hash of 1 GiB from page cache: {2**30 / seconds / 1e9:.2f} GB/s "
        f"({count} chunks, chunker {chunking.CHUNKER}; target >= 1.5)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--versions", type=int, default=8)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cas-dedup-"))
    try:
        series("fixed header", scratch, args.tensors, args.versions, growing=False)
        series("growing header", scratch, args.tensors, args.versions, growing=True)
        throughput(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
