"""Store benchmark: put/get against `cp -r` and `rsync -a`, interleaved, in one run.

Each repetition runs every contestant once, one after another (cp, rsync, the store
as a library, the store as `cas` processes), so a load spike from another job on the
machine hits one repetition of all of them rather than a whole column. Every timing
starts with no dirty pages queued and as much memory just freed as its case writes
(``free_memory``). Reported: the median over ``--repeat`` repetitions, the minimum (what
the code costs when nothing else intrudes), and the median's ratio to a *full* `cp -r`
of the same data. Beside ``rsync -a``'s no-change pass, ``find`` listing every folder and
``lstat``-ing every file (in C, comparing nothing) shows the floor of any unchanged check,
and a Python loop reading every file and writing it out again (``copy_through_python``)
the floor of a fresh get, and of a put of large files: both must see every byte.

Cases (``--cases``, comma-separated; default all):

* ``big``     4 x 256 MiB fresh put and get, then an unchanged re-put and re-get
* ``small``   20,000 x 4 KiB in 200 folders, the same operations
* ``many``    100,000 x 1 KiB: unchanged re-put and re-get (the metadata path)
* ``series``  a checkpoint file of 64 x 4 MiB tensors, 8 versions, 3 tensors changed in
              each: the 8 puts, then 8 overwrite gets into one folder, against
              ``rsync -a --delete`` of the same 8 versions into one folder
* ``startup`` ``cas --help`` and ``cas ls`` as processes

Run: python benchmarks/bench_store.py [--cases big,small] [--repeat 3] [--scale 1.0]
     [--no-cli] [--dir /tmp]        (quick look: --scale 0.1 --repeat 1)
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cas_storage import Store

CASES = ("big", "small", "many", "series", "startup")
CAS = [sys.executable, "-m", "cas_storage.cli"]
TENSOR = 4 * 1024 * 1024


def cas_command() -> list[str]:
    """The installed ``cas`` script if it is beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("cas")
    return [str(script)] if script.exists() else CAS


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 * 1024 * 1024))
            out.write(block)
            left -= len(block)


def make_files(root: Path, count: int, size: int, folders: int) -> None:
    for i in range(count):
        folder = root / f"dir{i % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:06d}.bin").write_bytes(os.urandom(size))


def run(*command: object) -> None:
    subprocess.run([str(c) for c in command], check=True, stdout=subprocess.DEVNULL)


#: The floor of any unchanged check that looks at every file: a C walk, one lstat each.
FLOOR = "find, lstat of every file"


def stat_every_file(tree: Path) -> None:
    """What an unchanged re-get must do at least: list every folder and ``lstat`` every
    file (``find`` prints what the stat cache compares), in C, comparing nothing."""
    run("find", tree, "-printf", "%i %s %T@ %C@ %m\\n")


#: The floor of a fresh get, and of a put of large files, in Python.
COPY_FLOOR = "Python read + write, per file"


def copy_through_python(src: Path, out: Path) -> None:
    """What a fresh get must do at least in Python: read every byte into this process
    (the store verifies what it reads) and write it out again, file by file, with the
    ``fstat`` a checkout records each file by. For large files it is a put's floor too: a
    put reads every byte to cut and hash it and writes it once more, into a pack. Nothing
    here is cut, hashed or recorded. `cp` makes one copy, in the kernel
    (``copy_file_range``); this makes the two the store must."""
    buffer = bytearray(16 * 1024 * 1024)
    view = memoryview(buffer)
    for folder, _, names in os.walk(src):
        target = out / os.path.relpath(folder, src)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            written = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with open(os.path.join(folder, name), "rb", buffering=0) as source:
                    while length := source.readinto(buffer):
                        os.write(written, view[:length])
                os.fstat(written)
            finally:
                os.close(written)


def sync() -> None:
    subprocess.run(["sync"], check=True)  # start every timing with no dirty pages queued


#: Where ``remove`` sets aside trees of many files (inside the scratch folder, which
#: is deleted after the last timing).
TRASH: list[Path] = []
#: Trees with more entries than this are set aside rather than deleted.
MANY = 1000


def remove(*paths: Path) -> None:
    """Delete ``paths``; a tree of many files is only set aside (a rename) until the end.

    On ext4 without a journal (this machine's) a new inode is not given the number of
    one deleted in the last minutes, and the allocator checks each such inode it passes
    (``recently_deleted``): creating 20,000 files right after deleting 20,000 cost
    ~350 µs a file instead of ~25 µs, so whoever ran after a deletion — `cp -r` or the
    store — paid for the one before. Large files are deleted at once: kept, their
    dirty pages would turn the next timings into a disk-writeback benchmark.
    """
    for path in paths:
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            if len(list(itertools.islice(path.rglob("*"), MANY + 1))) > MANY:
                TRASH[0].mkdir(exist_ok=True)
                path.rename(TRASH[0] / f"{len(list(TRASH[0].iterdir()))}-{path.name}")
            else:
                shutil.rmtree(path)
        else:
            path.unlink()


#: The file ``free_memory`` writes and deletes (inside the scratch folder).
BALLAST: list[Path] = []


def free_memory(size: int) -> None:
    """Leave ``size`` bytes of memory just freed: write a file that big, then delete it.

    On a VM that hands freed memory back to its host (this machine: Firecracker with
    free page reporting) the first write into memory the host took back faults in the
    host, ~1 s per GiB. Which run pays that depends on what was freed just before it,
    not on the tool: `cp -r` ran right after the previous copy was deleted and reused its
    pages, while a get ran a second after a put and found none (1.3 s against 0.32 s for
    the same get; `cp -r` in the get's place took 1.2 s too). So every timing starts
    with as much just-freed memory as it writes. The file is deleted before writeback
    starts, so nothing of it reaches the disk.
    """
    if size <= 0:
        return
    block = bytes(8 * 1024 * 1024)
    with open(BALLAST[0], "wb") as out:
        for _ in range(-(-size // len(block))):
            out.write(block)
    BALLAST[0].unlink()


class Table:
    """Timings per (case, operation), medians over the repetitions, ratios to a base."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[float]] = {}
        self.notes: dict[tuple[str, str], str] = {}
        self.base: dict[str, tuple[str, str]] = {}
        self.order: list[tuple[str, str]] = []
        #: Per case, the memory each of its timings starts with just freed (``free_memory``).
        self.fresh: dict[str, int] = {}

    def time(self, case: str, op: str, action: Callable[[], object], note: str = "") -> object:
        sync()
        free_memory(self.fresh.get(case, 0))
        start = time.perf_counter()
        result = action()
        elapsed = time.perf_counter() - start
        key = (case, op)
        if key not in self.times:
            self.times[key] = []
            self.order.append(key)
        self.times[key].append(elapsed)
        if note:
            self.notes[key] = note
        return result

    def note(self, case: str, op: str, text: str) -> None:
        self.notes[(case, op)] = text

    def print(self) -> None:
        head = f"{'case':<22} {'operation':<30} {'median s':>9} {'min s':>7} {'ratio':>6}"
        print(f"\n{head}  note")
        for key in self.order:
            case, op = key
            seconds = statistics.median(self.times[key])
            base = self.base.get(case)
            ratio = seconds / statistics.median(self.times[base]) if base else float("nan")
            fastest = min(self.times[key])
            note = self.notes.get(key, "")
            print(f"{case:<22} {op:<30} {seconds:9.3f} {fastest:7.3f} {ratio:6.2f}  {note}")
        print("ratio: of medians, to a full `cp -r` of the case's data (series: to its")
        print("`rsync -a --delete`); every timing started with as much memory just freed as")
        print("its case writes (free_memory)")


def fresh_for(files: Iterable[Path]) -> int:
    """Memory to free before each timing of a case writing ``files``: 2.5 x their bytes.

    Measured (a 1 GiB get right after its put): with 1.25 x freed the get still took
    0.41-0.56 s, with 2.5 x 0.32-0.39 s, `cp -r` 0.29-0.37 s. The allocator does not
    hand out exactly the pages just freed, so the margin must be wide.
    """
    return sum(f.stat().st_size for f in files if f.is_file()) * 5 // 2


def open_store(scratch: Path, name: str) -> Store:
    return Store.open(scratch / f"store-{name}", state=str(scratch / f"state-{name}.db"))


def fresh(scratch: Path, name: str) -> None:
    for leftover in scratch.glob(f"state-{name}.db*"):
        leftover.unlink()
    remove(scratch / f"store-{name}")


def cli(scratch: Path, name: str, *args: object) -> None:
    env_args = ["--store", scratch / f"store-{name}", "--quiet"]
    command = [*cas_command(), *env_args, *args]
    env = {**os.environ, "CAS_STATE": str(scratch / f"state-{name}.db")}
    subprocess.run([str(c) for c in command], check=True, stdout=subprocess.DEVNULL, env=env)


def bench_copy_case(
    table: Table, case: str, src: Path, scratch: Path, repeat: int, with_cli: bool
) -> None:
    """Fresh put/get and unchanged re-put/re-get of ``src``, against cp and rsync."""
    out = scratch / "out"
    table.base[case] = (case, "cp -r")
    table.fresh[case] = fresh_for(src.rglob("*"))
    for _ in range(repeat):
        remove(out)
        table.time(case, "cp -r", lambda: run("cp", "-r", src, out))
        remove(out)
        table.time(case, "rsync -a", lambda: run("rsync", "-a", f"{src}/", f"{out}/"))
        table.time(case, "rsync -a, unchanged", lambda: run("rsync", "-a", f"{src}/", f"{out}/"))
        table.time(case, FLOOR, lambda: stat_every_file(out))
        remove(out)
        table.time(case, COPY_FLOOR, lambda: copy_through_python(src, out))
        remove(out)
        store_lib(table, case, src, out, scratch)
        if with_cli:
            store_cli(table, case, src, out, scratch)


def store_lib(table: Table, case: str, src: Path, out: Path, scratch: Path) -> None:
    fresh(scratch, "lib")
    store = open_store(scratch, "lib")
    version = table.time(case, "put (lib)", lambda: store.snapshot("b", "d", src))
    table.note(case, "put (lib)", f"{version.files} files")
    result = table.time(case, "get (lib)", lambda: store.checkout("b", "d", out))
    table.note(case, "get (lib)", f"{result.bytes_transferred:,} B moved")
    table.time(case, "re-put unchanged (lib)", lambda: store.snapshot("b", "d", src))
    again = table.time(
        case, "re-get unchanged (lib)", lambda: store.checkout("b", "d", out, overwrite=True)
    )
    table.note(case, "re-get unchanged (lib)", f"{again.bytes_transferred:,} B moved")
    store.close()
    remove(out)
    fresh(scratch, "lib")


def store_cli(table: Table, case: str, src: Path, out: Path, scratch: Path) -> None:
    fresh(scratch, "cli")
    table.time(case, "put (cas)", lambda: cli(scratch, "cli", "put", "b", "d", src))
    table.time(case, "get (cas)", lambda: cli(scratch, "cli", "get", "b", "d", out))
    table.time(case, "re-put unchanged (cas)", lambda: cli(scratch, "cli", "put", "b", "d", src))
    table.time(
        case,
        "re-get unchanged (cas)",
        lambda: cli(scratch, "cli", "get", "b", "d", out, "--overwrite"),
    )
    remove(out)
    fresh(scratch, "cli")


def bench_many(table: Table, scratch: Path, scale: float, repeat: int, with_cli: bool) -> None:
    """The metadata path: unchanged re-put and re-get of 100,000 small files."""
    count = int(100_000 * scale)
    case = f"many {count:,} x 1 KiB"
    src, out = scratch / "many-src", scratch / "out"
    make_files(src, count, 1024, 1000)
    table.base[case] = (case, "cp -r")
    table.fresh[case] = fresh_for(src.rglob("*"))
    store = open_store(scratch, "many")
    store.snapshot("b", "d", src)
    store.checkout("b", "d", out)
    store.close()
    time.sleep(0.05)  # past the stat cache's racy window, as a real re-put would be
    # rsync's own unchanged pass is the yardstick; a full cp -r gives the ratio's base.
    # rsync gets a copy of its own: into the store's checkout it would rewrite every file
    # (checkouts do not keep mtimes), and the store's "unchanged" re-get would be anything but.
    copy, mirror = scratch / "many-cp", scratch / "many-rsync"
    run("rsync", "-a", f"{src}/", f"{mirror}/")
    for _ in range(repeat):
        remove(copy)
        table.time(case, "cp -r", lambda: run("cp", "-r", src, copy))
        table.time(case, "rsync -a, unchanged", lambda: run("rsync", "-a", f"{src}/", f"{mirror}/"))
        table.time(case, FLOOR, lambda: stat_every_file(mirror))
        store = open_store(scratch, "many")
        table.time(case, "re-put unchanged (lib)", lambda s=store: s.snapshot("b", "d", src))
        table.time(
            case,
            "re-get unchanged (lib)",
            lambda s=store: s.checkout("b", "d", out, overwrite=True),
        )
        store.close()
        if with_cli:
            table.time(
                case, "re-put unchanged (cas)", lambda: cli(scratch, "many", "put", "b", "d", src)
            )
            table.time(
                case,
                "re-get unchanged (cas)",
                lambda: cli(scratch, "many", "get", "b", "d", out, "--overwrite"),
            )
    remove(copy, mirror, src, out)
    fresh(scratch, "many")


def series_versions(root: Path, tensors: int, versions: int) -> list[Path]:
    """``versions`` folders, each with one checkpoint file; 3 tensors change per version."""
    rng = random.Random(7)
    data = [os.urandom(TENSOR) for _ in range(tensors)]
    folders = []
    for v in range(versions):
        if v:
            for i in rng.sample(range(tensors), 3):
                data[i] = os.urandom(TENSOR)
        folder = root / f"v{v + 1}"
        folder.mkdir(parents=True)
        with open(folder / "model.ckpt", "wb") as out:
            for tensor in data:
                out.write(tensor)
        folders.append(folder)
    return folders


def bench_series(table: Table, scratch: Path, scale: float, repeat: int) -> None:
    tensors = max(8, int(64 * scale))
    case = f"series 8 x {tensors} tensors"
    folders = series_versions(scratch / "series", tensors, 8)
    out = scratch / "out"
    table.base[case] = (case, "rsync -a --delete, 8 versions")
    table.fresh[case] = fresh_for(folders[0].rglob("*"))  # each version replaces the last
    for _ in range(repeat):
        remove(out)

        def rsync_all() -> None:
            for folder in folders:
                run("rsync", "-a", "--delete", f"{folder}/", f"{out}/")

        table.time(case, "rsync -a --delete, 8 versions", rsync_all)
        remove(out)
        fresh(scratch, "series")
        store = open_store(scratch, "series")

        def put_all(s: Store = store) -> None:
            for folder in folders:
                s.snapshot("train", "ckpt", folder)

        table.time(case, "8 puts (lib)", put_all)
        moved: list[int] = []

        def get_all(s: Store = store, moved: list[int] = moved) -> None:
            for number in range(1, 9):
                moved.append(
                    s.checkout(
                        "train", "ckpt", out, version=number, overwrite=True
                    ).bytes_transferred
                )

        table.time(case, "8 overwrite gets (lib)", get_all)
        changed = 3 * TENSOR * 7
        table.note(
            case,
            "8 overwrite gets (lib)",
            f"versions 2-8 moved {sum(moved[1:]) / changed:.2f} x the changed bytes",
        )
        logical = 8 * tensors * TENSOR
        table.note(
            case, "8 puts (lib)", f"stored {store.stats().stored_bytes / logical:.3f} of logical"
        )
        store.close()
        fresh(scratch, "series")
    remove(out, scratch / "series")


def cache_bytecode(scratch: Path) -> None:
    """Let the ``cas`` processes keep compiled bytecode, as an installed package does.

    pip compiles an installed package once; without a cache (``PYTHONDONTWRITEBYTECODE``
    set, or an editable install that may not write one) every command would compile
    cas_storage anew, ~0.1 s that no user pays. Cached in the scratch folder, not the
    source tree, and warmed once here so no timed run pays for compiling.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    run(sys.executable, "-c", "import cas_storage.cli, cas_storage.store, rich.progress")


def bench_startup(table: Table, scratch: Path, repeat: int) -> None:
    case = "startup"
    fresh(scratch, "startup")
    open_store(scratch, "startup").close()
    table.base[case] = (case, "python -c pass")
    for _ in range(max(repeat, 5)):
        table.time(case, "python -c pass", lambda: run(sys.executable, "-c", "pass"))
        table.time(case, "cas --help", lambda: run(*cas_command(), "--help"))
        table.time(case, "cas ls", lambda: cli(scratch, "startup", "ls"))
    fresh(scratch, "startup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"some of {', '.join(CASES)}")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the datasets (0.1 = 10%%)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip `cas put/get` as processes")
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if not shutil.which("rsync"):
        raise SystemExit("rsync is needed for the comparison: apt-get install rsync")
    with_cli = not args.no_cli
    scratch = Path(tempfile.mkdtemp(prefix="cas-bench-", dir=args.dir))
    TRASH.append(scratch / "trash")
    BALLAST.append(scratch / "ballast")
    table = Table()
    try:
        cache_bytecode(scratch)
        if "big" in cases:
            src = scratch / "big-src"
            src.mkdir()
            for i in range(4):
                write_random(src / f"shard{i}.bin", int(256 * 1024 * 1024 * args.scale))
            bench_copy_case(table, "big 4 x 256 MiB", src, scratch, args.repeat, with_cli)
            remove(src)
        if "small" in cases:
            src = scratch / "small-src"
            make_files(src, int(20_000 * args.scale), 4096, 200)
            bench_copy_case(table, "small 20k x 4 KiB", src, scratch, args.repeat, with_cli)
            remove(src)
        if "many" in cases:
            bench_many(table, scratch, args.scale, args.repeat, with_cli)
        if "series" in cases:
            bench_series(table, scratch, args.scale, args.repeat)
        if "startup" in cases:
            bench_startup(table, scratch, args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
