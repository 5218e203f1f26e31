"""Page times of ``cas serve`` on a store of 1,000 versions of one path.

Builds the store (20 files of 4 KiB, one changing per version, plus a step
counter), starts a real ``cas serve --port 0`` process and times each page over
HTTP: the first request after start-up (the server computes every path's history
in the background when it starts), the median of repeated requests, and the
first path page after a new version was recorded meanwhile (only that version's
manifest is read). Usage: ``python benchmarks/bench_serve.py [--versions N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from cas_storage import Store


def build(root: str, versions: int) -> Store:
    store = Store.open(os.path.join(root, ".cas"), state=os.path.join(root, "state.db"))
    src = os.path.join(root, "ckpt")
    os.makedirs(os.path.join(src, "layers"))
    rng = random.Random(1)
    for n in range(versions):
        for i in range(20) if n == 0 else [n % 20]:
            with open(os.path.join(src, "layers", f"l{i:02}.bin"), "wb") as f:
                f.write(rng.randbytes(4096))
        with open(os.path.join(src, "step.txt"), "w") as f:
            f.write(str(n))
        store.snapshot("root.train", "ckpt", src)
    store.snapshot("root.eval", "report", os.path.join(src, "step.txt"))
    return store


def fetch(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
        assert r.status == 200, url
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        store = build(root, args.versions)
        print(f"built {args.versions} versions in {time.perf_counter() - t:.1f} s")
        env = {**os.environ, "CAS_STATE": os.path.join(root, "state.db")}
        cmd = [sys.executable, "-m", "cas_storage.cli", "--store", store.url, "serve"]
        started = time.perf_counter()
        server = subprocess.Popen([*cmd, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            print(
                f"ready to serve after {time.perf_counter() - started:.2f} s (histories computed)"
            )
            base = re.search(r"http://\S+/", line).group(0)  # type: ignore[union-attr]
            last = args.versions
            q = "work=root.train&path=ckpt"
            pages = {
                "works": "",
                "path (newest 100 of the versions, chart of all)": f"path?{q}",
                "path, oldest page": f"path?{q}&page={(last + 99) // 100}",
                "version (file tree)": f"version?{q}&v={last // 2}",
                f"diff 1..{last}": f"diff?{q}&a=1&b={last}",
                "download (4 KiB file)": f"file?{q}&v={last}&file=layers/l00.bin",
            }
            print(f"{'page':50} {'first':>9} {'median':>9} {'max':>9}")
            for name, page in pages.items():
                first = fetch(base + page)
                times = [fetch(base + page) for _ in range(args.repeat)]
                print(
                    f"{name:50} {first * 1000:7.1f}ms {statistics.median(times) * 1000:7.1f}ms "
                    f"{max(times) * 1000:7.1f}ms"
                )
            with open(os.path.join(root, "ckpt", "step.txt"), "w") as f:
                f.write("one more")
            store.snapshot("root.train", "ckpt", os.path.join(root, "ckpt"))
            after = fetch(base + f"path?{q}")
            print(f"{'path, first visit after one more version':50} {after * 1000:7.1f}ms")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
