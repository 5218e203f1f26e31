"""Every benchmark the docs cite still starts: ``--help`` parses its options.

The benchmarks are run by hand (``make bench``), not in CI, so an error in how one
reads its arguments would otherwise surface only when someone wants its figures.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))


def test_every_benchmark_is_found() -> None:
    assert "bench_store.py" in SCRIPTS and len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:"), done.stdout


def test_the_copy_floor_copies_every_file(tmp_path: pathlib.Path) -> None:
    """``bench_store``'s floor row times a whole copy: every file, every byte, even past
    its 16 MiB buffer, or the floor it reports would be too low."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_store
    finally:
        sys.path.remove(str(BENCHMARKS))
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    files = {
        "top.bin": b"x" * 10,
        "a/empty": b"",
        "a/b/large.bin": bytes(range(256)) * (70 * 1024 + 3),  # 17.5 MiB: two reads
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    bench_store.copy_through_python(src, tmp_path / "out")
    copied = {
        p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    }
    assert copied == files
