"""The CLI conventions people expect (DESIGN.md, "CLI conventions"), in real `cas` processes."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from conftest import write_tree

from cas_storage import Store, __version__
from cas_storage.chunking import THRESHOLD
from cas_storage.progress import Progress

PAST = time.time() - 3600  # files this old are vouched for by the stat cache


def run(*args: str, env: dict[str, str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cas_storage.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def cas(tmp_path: pathlib.Path):
    env = {**os.environ, "CAS_STATE": str(tmp_path / "state.db"), "CAS_STORE": str(tmp_path / "s")}

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return run(*args, env=env, cwd=tmp_path)

    return call


def old_tree(root: pathlib.Path, files: dict[str, bytes | str]) -> pathlib.Path:
    write_tree(root, files)
    for dirpath, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(dirpath, name), (PAST, PAST))
    return root


def test_global_options_before_or_after_the_command(cas, tmp_path):
    src = old_tree(tmp_path / "src", {"a.txt": "a"})
    store = str(tmp_path / "other")
    done = cas("put", "root.w", "p", str(src), "--quiet", "--store", store, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 1 and done.stderr == ""
    for args in (["--json", "--store", store, "ls"], ["ls", "--json", "--store", store]):
        done = cas(*args)
        assert done.returncode == 0 and json.loads(done.stdout)[0]["work"] == "root.w", args
    # given before the command, not reset by the command's own defaults
    done = cas("--store", store, "--json", "log", "root.w", "p")
    assert json.loads(done.stdout)[0]["version"] == 1


def test_version_flag(cas):
    done = cas("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"cas {__version__}"


def test_human_sizes_in_tables_exact_bytes_in_json(cas, tmp_path):
    src = old_tree(tmp_path / "src", {"big.bin": b"\0" * 1536 * 1024, "a-very-long-" * 12: "x"})
    assert cas("put", "root.w", "p", str(src)).stdout.strip().endswith("(2 files, 1.5 MiB)")
    human = cas("ls").stdout
    assert "1.5 MiB" in human and "1572865" not in human
    assert json.loads(cas("ls", "--json").stdout)[0]["bytes"] == 1536 * 1024 + 1
    shown = cas("show", "root.w", "p").stdout
    assert "1.5 MiB" in shown and "a-very-long-" * 12 in shown  # piped tables are never cut
    stats = cas("stats").stdout
    assert "LOGICAL" in stats and "MiB" in stats
    assert json.loads(cas("--json", "stats").stdout)["logical_bytes"] == 1536 * 1024 + 1


def test_log_n_shows_the_newest(cas, tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_tree(src, {"f": str(i)})
        assert cas("put", "w", "p", str(src)).returncode == 0
    assert [v["version"] for v in json.loads(cas("log", "w", "p", "-n", "2", "--json").stdout)] == [
        4,
        3,
    ]
    lines = cas("log", "w", "p", "--max-count", "1").stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == "4"


@pytest.mark.parametrize(
    "args, flag",
    [
        (["gc", "--keep-last", "0"], "--keep-last"),
        (["gc", "--keep-last", "x"], "--keep-last"),
        (["gc", "--grace", "-1"], "--grace"),
        (["verify", "--sample", "-2"], "--sample"),
        (["log", "w", "p", "-n", "0"], "-n/--max-count"),
        (["show", "w", "p", "--version", "zz"], "--version"),
        (["diff", "w", "p", "1"], "v2"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(cas, args, flag):
    done = cas(*args)
    assert done.returncode == 2 and flag in done.stderr and "Traceback" not in done.stderr


def test_status_reads_only_what_the_stat_cache_cannot_vouch_for(cas, tmp_path):
    src = old_tree(tmp_path / "src", {"keep.txt": "k", "edit.txt": "e1", "gone.txt": "g"})
    old_tree(src, {"sub/deep.bin": b"\1" * 100})
    assert cas("put", "root.w", "p", str(src)).returncode == 0
    clean = cas("status", "root.w", "p", str(src), "--json")
    report = json.loads(clean.stdout)
    assert clean.returncode == 0 and report["files_read"] == 0  # all vouched for by the cache
    assert report["added"] == report["removed"] == report["changed"] == []
    assert "matches root.w:p version 1" in cas("status", "root.w", "p", str(src)).stderr

    (src / "edit.txt").write_text("e2")  # same size: must be read to be known
    os.utime(src / "edit.txt", (PAST + 5, PAST + 5))
    (src / "gone.txt").unlink()
    write_tree(src, {"new.txt": "n"})
    report = json.loads(cas("--json", "status", "root.w", "p", str(src)).stdout)
    assert report == {
        "version": 1,
        "added": ["new.txt"],
        "removed": ["gone.txt"],
        "changed": ["edit.txt"],
        "files_read": 1,
        "bytes_read": 2,
    }
    human = cas("status", "root.w", "p", str(src)).stdout.splitlines()
    assert human == ["+ new.txt", "- gone.txt", "M edit.txt"]
    # status never writes: the store still has exactly one version
    assert json.loads(cas("--json", "ls").stdout)[0]["versions"] == 1


def test_gc_dry_run_says_when_grace_holds_objects_back(cas, tmp_path):
    src = tmp_path / "src"
    for content in ("one", "two"):
        write_tree(src, {"f": content})
        cas("put", "w", "p", str(src))
    done = cas("gc", "--keep-last", "1", "--dry-run")
    assert done.returncode == 0
    assert "would free 1 versions, 0 objects" in done.stdout
    # version 1's blob and manifest are unreferenced once it is dropped, but young
    assert "2 unreferenced objects (131 B) are kept: younger than the grace period" in done.stdout
    assert "--grace 3600" in done.stdout
    report = json.loads(cas("--json", "gc", "--keep-last", "1", "--dry-run").stdout)
    assert report["objects_held"] == 2 and report["bytes_held"] == 131
    done = cas("gc", "--keep-last", "1", "--dry-run", "--grace", "0")
    assert "2 objects" in done.stdout and "kept" not in done.stdout


def test_get_overwrite_mirrors_and_refuses_a_type_change(cas, tmp_path):
    src = write_tree(tmp_path / "src", {"a.txt": "a", "sub/b.txt": "b"})
    cas("put", "w", "dir", str(src))
    cas("put", "w", "file", str(src / "a.txt"))
    assert "files not in it are removed" in " ".join(cas("get", "--help").stdout.split())

    dest = write_tree(tmp_path / "dest", {"a.txt": "old", "extra.txt": "mine"})
    refused = cas("get", "w", "dir", str(dest))
    assert refused.returncode == 1 and "pass --overwrite" in refused.stderr
    assert (dest / "extra.txt").exists()
    done = cas("get", "w", "dir", str(dest), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.rglob("*")) == ["a.txt", "b.txt", "sub"]  # mirrored

    a_file = tmp_path / "plain"
    a_file.write_text("mine")
    refused = cas("get", "w", "dir", str(a_file), "--overwrite")
    assert refused.returncode == 1 and "--replace-type" in refused.stderr
    assert "is a file but w:dir version 1 is a folder" in refused.stderr
    assert a_file.read_text() == "mine"
    refused = cas("get", "w", "file", str(dest), "--overwrite")
    assert refused.returncode == 1
    assert "is a folder but w:file version 1 is a file" in refused.stderr
    assert (dest / "sub" / "b.txt").exists()
    assert cas("get", "w", "dir", str(a_file), "--overwrite", "--replace-type").returncode == 0
    assert (a_file / "sub" / "b.txt").read_text() == "b"


def test_no_progress_when_not_a_terminal(cas, tmp_path):
    # stderr is a pipe here: even a slow operation prints no bar
    src = write_tree(tmp_path / "src", {"f": os.urandom(2000)})
    for args in (["put", "w", "p", str(src)], ["get", "w", "p", str(tmp_path / "o")], ["verify"]):
        done = cas(*args)
        assert done.returncode == 0 and done.stderr == "", args


class Recorder(Progress):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, int | None]] = []

    def start(self, total_bytes: int | None = None, total_items: int | None = None) -> None:
        self.calls.append(("start", total_bytes, total_items))

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.calls.append(("advance", files, nbytes))


def test_progress_counts_bytes_as_they_are_read_and_written(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    size = THRESHOLD * 3
    src = write_tree(tmp_path / "src", {"big.bin": os.urandom(size)})
    for direction in ("put", "get"):
        seen = Recorder()
        if direction == "put":
            store.snapshot("w", "p", src, progress=seen)
        else:
            store.checkout("w", "p", tmp_path / "out", progress=seen)
        assert seen.calls[0] == ("start", size, None), direction
        steps = [c for c in seen.calls[1:] if c[2]]
        # many byte steps for the one file, all before the file is counted done
        assert len(steps) > 3 and sum(c[2] for c in steps) == size, direction
        assert seen.calls[-1] == ("advance", 1, 0), direction
    for name, call in (
        ("verify", lambda p: store.verify(progress=p)),
        ("gc", lambda p: store.gc(progress=p)),
        ("export", lambda p: store.export_git(tmp_path / "git", progress=p)),
    ):
        seen = Recorder()
        call(seen)
        total = seen.calls[0][2]
        assert seen.calls[0][0] == "start" and total, name
        assert sum(c[1] for c in seen.calls[1:]) == total, name


def test_rich_is_imported_only_to_draw(cas, tmp_path):
    """Start-up stays lean: JSON output and quick operations never import rich."""
    src = write_tree(tmp_path / "src", {"f": "x"})
    probe = (
        "import sys, cas_storage.cli as c; c.main(sys.argv[1:]); "
        "print('rich' in sys.modules, file=sys.stderr)"
    )
    env = {**os.environ, "CAS_STATE": str(tmp_path / "state.db"), "CAS_STORE": str(tmp_path / "s")}

    def imports_rich(*args: str) -> bool:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stderr.strip().splitlines()[-1] == "True"

    assert not imports_rich("put", "w", "p", str(src))  # quick, not a terminal: no bar
    assert not imports_rich("--json", "ls")
    assert not imports_rich("get", "w", "p", str(tmp_path / "out"))
    assert not imports_rich("ls")  # a human table is plain text


def test_only_the_cas_process_freezes_its_objects_before_exiting(tmp_path):
    """``main()`` as the program skips Python's exit-time collection; a caller's stays."""
    write_tree(tmp_path / "src", {"f": "x"})
    env = {**os.environ, "CAS_STATE": str(tmp_path / "state.db"), "CAS_STORE": str(tmp_path / "s")}

    def frozen(call: str) -> bool:
        # Counted against the start: Python 3.12's own start-up can leave frozen objects.
        probe = (
            "import gc, sys, cas_storage.cli as c; before = gc.get_freeze_count(); "
            f"{call}; print(gc.get_freeze_count() > before)"
        )
        args = ["put", "w", "p", str(tmp_path / "src")]
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1] == "True"

    assert frozen("c.main()")  # as `cas` runs it: arguments from sys.argv
    assert not frozen("c.main(sys.argv[1:])")


def test_tables_align_wide_names_and_show_control_characters_escaped(cas, tmp_path):
    import unicodedata

    src = write_tree(tmp_path / "src", {"a\x1b[31mb": "x", "f": "y"})
    for key in ("日本", "ab"):
        assert cas("put", "w", key, str(src)).returncode == 0
    listed = cas("ls")
    assert listed.returncode == 0, listed.stderr
    # BYTES, the last column, is right-aligned: every line ends in the same terminal cell.
    cells = {
        sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)
        for line in listed.stdout.splitlines()
    }
    assert len(cells) == 1, listed.stdout
    shown = cas("show", "w", "ab")
    assert "a\\x1b[31mb" in shown.stdout and "\x1b" not in shown.stdout, shown.stdout
