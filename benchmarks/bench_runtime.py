"""Runtime overhead: starting a work, one run round trip, an unchanged get() of 1,000 files.

Run: python benchmarks/bench_runtime.py   (in a scratch folder it creates)
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from runtime import App, Flow, Work


class Maker(Work):
    def __init__(self):
        super().__init__()
        self.folder = "lit://data"

    def run(self, files=0):
        if files:
            os.makedirs(self.folder, exist_ok=True)
            for i in range(files):
                (self.folder / f"f{i:04d}.bin").write_bytes(os.urandom(1024))


class Getter(Work):
    def __init__(self):
        super().__init__()
        self.timings = []

    def run(self, folder, repeat=0):
        for _ in range(repeat):
            start = time.perf_counter()
            result = folder.get(overwrite=True)
            self.timings.append((time.perf_counter() - start, result.bytes_transferred))


class Bench(Flow):
    def __init__(self):
        super().__init__()
        self.maker = Maker()
        self.getter = Getter()
        self.figures = {}

    def run(self):
        start = time.perf_counter()
        self.maker.run()
        self.figures["first run (process start + round trip)"] = time.perf_counter() - start
        trips = []
        for _ in range(50):
            start = time.perf_counter()
            self.maker.run()
            trips.append(time.perf_counter() - start)
        self.figures["run round trip (median of 50)"] = statistics.median(trips)
        self.maker.run(files=1000)
        self.getter.run(self.maker.folder, repeat=0)  # first transfer happens here
        self.getter.run(self.maker.folder, repeat=20)
        seconds = [t for t, _ in self.getter.timings]
        moved = sum(b for _, b in self.getter.timings)
        self.figures["unchanged get() of 1,000 files (median of 20)"] = statistics.median(seconds)
        self.figures["bytes moved by those 20 gets"] = moved


def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="cas-rt-bench-"))
    flow = Bench()
    App(flow).run()
    for name, value in flow.figures.items():
        shown = f"{value * 1000:.1f} ms" if isinstance(value, float) else f"{value}"
        print(f"{name:<48} {shown}")


if __name__ == "__main__":
    main()
