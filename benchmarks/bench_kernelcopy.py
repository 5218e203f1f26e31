"""Kernel copies in pieces: how a checkout's ``copy_file_range`` calls should be cut.

A checkout assembles a large file from pieces: runs of chunks in pack files, chunks of
the file already at the destination. Their boundaries fall where content-defined
chunking put them, at any byte. This measures copying 1 GiB (4 files) from the page
cache in such pieces, against `cp -r` of the same files, interleaved per repetition:

* ``4 MiB pieces``          every call starts at a multiple of 4 MiB: the best case
* ``random pieces, raw``    pieces of 3-4 MiB of any byte length, one call each
* ``random pieces``         the same through ``kernelcopy.copy_range`` (a short first
                            call up to a 64 KiB boundary: ``SPLICE_ALIGN``)
* ``random, not congruent`` the same, but each source offset 1,234 bytes past its
                            destination offset (a pack without ``packs.ALIGN``)

Run: python benchmarks/bench_kernelcopy.py [--repeat 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cas_storage import kernelcopy

FILES = 4
SIZE = 256 * 2**20
SHIFT = 1234


def pieces(seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes, left = [], SIZE - SHIFT
    while left:
        sizes.append(min(left, rng.randint(3 * 2**20, 4 * 2**20)))
        left -= sizes[-1]
    return sizes


def copy_pieces(
    src: Path, out: Path, sizes: list[int], shift: int, call: Callable[..., int]
) -> None:
    out.mkdir()
    for i in range(FILES):
        source = os.open(src / f"f{i}", os.O_RDONLY)
        target = os.open(out / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            offset = 0
            for size in sizes:
                done = 0
                while done < size:
                    n = call(source, target, size - done, shift + offset + done, offset + done)
                    if n <= 0:
                        raise RuntimeError("short copy")
                    done += n
                offset += size
        finally:
            os.close(source)
            os.close(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cas-bench-kcopy-") as tmp:
        scratch = Path(tmp)
        src = scratch / "src"
        src.mkdir()
        for i in range(FILES):
            (src / f"f{i}").write_bytes(os.urandom(SIZE))
        random_sizes = pieces(1)
        # The same bytes as the random pieces (SIZE - SHIFT per file), in 4 MiB calls.
        aligned = [4 * 2**20] * (SIZE // (4 * 2**20) - 1) + [4 * 2**20 - SHIFT]
        contestants: dict[str, Callable[[Path], object]] = {
            "cp -r": lambda out: subprocess.run(["cp", "-r", src, out], check=True),
            "4 MiB pieces": lambda out: copy_pieces(src, out, aligned, 0, os.copy_file_range),
            "random pieces, raw": lambda out: copy_pieces(
                src, out, random_sizes, 0, os.copy_file_range
            ),
            "random pieces": lambda out: copy_pieces(
                src, out, random_sizes, 0, kernelcopy.copy_range
            ),
            "random, not congruent": lambda out: copy_pieces(
                src, out, random_sizes, SHIFT, kernelcopy.copy_range
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(args.repeat):
            for name, action in contestants.items():
                out = scratch / "out"
                subprocess.run(["sync"], check=True)
                start = time.perf_counter()
                action(out)
                times[name].append(time.perf_counter() - start)
                shutil.rmtree(out)
        base = statistics.median(times["cp -r"])
        print(f"{'copy of 1 GiB':<24} {'median s':>9} {'min s':>7} {'ratio':>6}")
        for name, seconds in times.items():
            median = statistics.median(seconds)
            print(f"{name:<24} {median:9.3f} {min(seconds):7.3f} {median / base:6.2f}")
        print("ratio: median to the median of `cp -r` in the same run")


if __name__ == "__main__":
    main()
