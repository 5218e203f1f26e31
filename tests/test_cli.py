"""The cas CLI against real stores made by real snapshots."""

import io
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import read_tree, write_tree

from cas_storage import Store
from cas_storage.cli import HANDLERS, _parser, main
from cas_storage.progress import TerminalProgress

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def populated(tmp_path, monkeypatch):
    """A store with two versions of root.train:ckpt and one drive put."""
    monkeypatch.setenv("CAS_STATE", str(tmp_path / "state.db"))
    store_dir = tmp_path / ".cas"
    store = Store.open(store_dir)
    src = write_tree(tmp_path / "src", {"model.bin": b"\x01" * 5000, "cfg.json": "{}"})
    store.snapshot("root.train", "ckpt", src)
    (src / "cfg.json").write_text('{"lr": 2}')
    write_tree(src, {"new.txt": "new"})
    store.snapshot("root.train", "ckpt", src)
    store.snapshot("drive:shared/root.a", "data", src)
    return store_dir, store


def cas(store_dir, *args, capsys):
    code = main(["--store", str(store_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_log_show_in_both_forms(populated, capsys):
    store_dir, store = populated
    code, out, _ = cas(store_dir, "ls", capsys=capsys)
    assert code == 0 and "root.train" in out and "drive shared" in out and "root.a" in out
    code, out, _ = cas(store_dir, "--json", "ls", capsys=capsys)
    rows = json.loads(out)
    assert {"work": "root.train", "path": "ckpt", "versions": 2} in [
        {k: r[k] for k in ("work", "path", "versions")} for r in rows
    ]
    code, out, _ = cas(store_dir, "--json", "log", "root.train", "ckpt", capsys=capsys)
    log = json.loads(out)
    assert [v["version"] for v in log] == [2, 1]
    assert set(log[0]) >= {"version", "manifest", "created", "files", "bytes"}
    code, out, _ = cas(store_dir, "log", "root.train", "ckpt", capsys=capsys)
    assert out.splitlines()[0].split()[0] == "VERSION" and out.splitlines()[1].split()[0] == "2"
    code, out, _ = cas(store_dir, "show", "root.train", "ckpt", "--version", "1", capsys=capsys)
    assert "model.bin" in out and "new.txt" not in out
    code, out, _ = cas(store_dir, "--json", "show", "root.train", "ckpt", capsys=capsys)
    assert {e["path"] for e in json.loads(out)["entries"]} == {"model.bin", "cfg.json", "new.txt"}


def test_cat_diff_get_put(populated, capsys, tmp_path):
    store_dir, store = populated
    code, out, _ = cas(
        store_dir, "cat", "root.train", "ckpt", "cfg.json", "--version", "1", capsys=capsys
    )
    assert code == 0 and out == "{}"
    code, out, _ = cas(store_dir, "diff", "root.train", "ckpt", "1", "2", capsys=capsys)
    assert out.split("\n")[:2] == ["+ new.txt", "M cfg.json"]
    code, out, _ = cas(store_dir, "--json", "diff", "root.train", "ckpt", "1", "2", capsys=capsys)
    assert json.loads(out) == {"added": ["new.txt"], "removed": [], "changed": ["cfg.json"]}
    prefix = store.version("root.train", "ckpt", 1).manifest[:8]
    code, out, _ = cas(
        store_dir,
        "--json",
        "get",
        "root.train",
        "ckpt",
        str(tmp_path / "out"),
        "--version",
        prefix,
        capsys=capsys,
    )
    assert json.loads(out)["version"] == 1 and read_tree(tmp_path / "out")["cfg.json"] == b"{}"
    write_tree(tmp_path / "extra", {"x": "x"})
    code, out, _ = cas(
        store_dir, "--json", "put", "root.eval", "x", str(tmp_path / "extra"), capsys=capsys
    )
    assert json.loads(out)["version"] == 1


def test_stats_verify_gc(populated, capsys, tmp_path):
    store_dir, store = populated
    code, out, _ = cas(store_dir, "--json", "stats", capsys=capsys)
    s = json.loads(out)
    assert s["versions"] == 3 and s["logical_bytes"] > s["stored_bytes"] and s["dedup_ratio"] > 1
    assert s["works"]["root.train"]["versions"] == 2
    assert cas(store_dir, "verify", capsys=capsys)[:2] == (0, "store is sound\n")
    code, out, _ = cas(
        store_dir, "--json", "gc", "--keep-last", "1", "--dry-run", "--grace", "0", capsys=capsys
    )
    assert code == 0 and len(json.loads(out)["versions_dropped"]) == 1
    assert len(store.versions("root.train", "ckpt")) == 2  # dry run changed nothing
    code, out, _ = cas(store_dir, "--json", "gc", "--keep-last", "1", "--grace", "0", capsys=capsys)
    report = json.loads(out)
    assert report["objects_deleted"] >= 1 and report["bytes_freed"] > 0
    assert [v.number for v in store.versions("root.train", "ckpt")] == [2]
    for i, (work, path) in enumerate((("root.train", "ckpt"), ("drive:shared/root.a", "data"))):
        store.checkout(work, path, tmp_path / f"kept-{i}")  # every kept version checks out
    assert cas(store_dir, "verify", capsys=capsys)[0] == 0


def test_verify_catches_flipped_byte_and_deleted_object(populated, capsys):
    store_dir, store = populated
    digests = sorted(store.objects)
    victim = store.objects.path(digests[0])
    os.chmod(victim, 0o644)
    data = bytearray(open(victim, "rb").read())
    data[0] ^= 1
    open(victim, "wb").write(bytes(data))
    os.remove(store.objects.path(digests[1]))
    code, out, err = cas(store_dir, "--json", "verify", capsys=capsys)
    problems = json.loads(out)
    assert code == 1
    assert {"corrupt", "missing"} <= {p["kind"] for p in problems}
    assert digests[0] in out and digests[1] in out


def test_export_git_is_readable_by_git_and_incremental(populated, capsys, tmp_path):
    store_dir, store = populated
    repo = tmp_path / "history"
    code, out, _ = cas(store_dir, "export-git", str(repo), "root.train", capsys=capsys)
    assert code == 0 and "2 new commits" in out
    ref = "refs/cas/root.train/ckpt"
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert log.splitlines() == ["root.train:ckpt version 2", "root.train:ckpt version 1"]
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:cfg.json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.startswith("cas-object ") and "size 9" in shown
    names = subprocess.run(
        ["git", "-C", str(repo), "diff", "--name-status", f"{ref}~1", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "A\tnew.txt" in names and "M\tcfg.json" in names
    code, out, _ = cas(store_dir, "export-git", str(repo), "root.train", capsys=capsys)
    assert "0 new commits" in out  # incremental: nothing new


@pytest.mark.parametrize(
    "args, message",
    [
        (["log", "root.nope", "ckpt"], "root.nope:ckpt not found"),
        (["show", "root.train", "ckpt", "--version", "9"], "version 9 not found"),
        (["show", "root.train", "ckpt", "--version", "ffffffffff"], "manifest ffffffffff..."),
        (["cat", "root.train", "ckpt", "nope.txt"], "nope.txt not found"),
        (["ls", "root.nope"], "work root.nope not found"),
        (["ls", "root.train", "nope"], "root.train:nope not found"),
        (["status", "root.train", "ckpt", "/nonexistent-cas"], "/nonexistent-cas not found"),
        (["get", "root.nope", "ckpt", "/tmp/never-cas"], "root.nope:ckpt not found"),
    ],
)
def test_errors_are_one_line_without_traceback(populated, capsys, args, message):
    """Every "not found" is worded the same way: WHAT not found [in WHERE] [(HINT)]."""
    store_dir, _ = populated
    code, out, err = cas(store_dir, *args, capsys=capsys)
    assert code == 1 and message in err and "Traceback" not in err and err.count("\n") == 1
    assert " not found" in err


def test_missing_store_and_usage_errors_in_a_real_process(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "cas_storage.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    done = run("--store", str(tmp_path / "nowhere"), "ls")
    assert done.returncode == 1 and "not found (no catalog.db)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "nowhere").exists()  # reading never creates a store
    done = run("log")
    assert done.returncode == 2 and "usage" in done.stderr


def test_every_command_has_help_and_is_documented():
    doc = (REPO / "docs" / "cli.md").read_text()
    subparsers = next(a for a in _parser()._actions if a.dest == "command")
    assert set(subparsers.choices) == set(HANDLERS)
    for name, sub in subparsers.choices.items():
        assert sub.description and "example: cas" in sub.epilog, name
        assert re.search(rf"^## `cas {re.escape(name)}", doc, re.MULTILINE), f"{name} undocumented"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    src = write_tree(tmp_path / "src", {f"f{i}": os.urandom(1000) for i in range(5)})
    tty = _Terminal()
    bar = TerminalProgress("put", stream=tty, delay=0)
    store.snapshot("w", "p", src, progress=bar)
    bar.done()
    bar = TerminalProgress("get", stream=tty, delay=0)
    store.checkout("w", "p", tmp_path / "out", progress=bar)
    bar.done()
    shown = tty.getvalue()
    # bytes done / total, rate, files and ETA, for both directions
    assert "put" in shown and "get" in shown and "4.9/4.9 KiB" in shown
    assert "5 files" in shown and "/s" in shown and "eta" in shown
    quiet = io.StringIO()  # not a terminal: nothing, even past the delay
    bar = TerminalProgress("get", quiet, 0)
    store.checkout("w", "p", tmp_path / "o2", progress=bar)
    bar.done()
    assert quiet.getvalue() == "" and bar.bar is None and bar.bytes == 5000


def test_quiet_flag(populated, capsys, tmp_path):
    store_dir, _ = populated
    code, out, err = cas(
        store_dir, "--quiet", "get", "root.train", "ckpt", str(tmp_path / "q"), capsys=capsys
    )
    assert code == 0 and err == "" and "transferred" in out


@pytest.mark.parametrize("grace", ["-1", "nan", "-inf"])
def test_gc_refuses_a_negative_or_nan_grace(populated, capsys, grace):
    store_dir, store = populated
    before = store.versions("root.train", "ckpt")
    with pytest.raises(SystemExit) as usage:
        cas(store_dir, "gc", "--keep-last", "1", f"--grace={grace}", capsys=capsys)
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "--grace" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="grace period must be a number of seconds >= 0"):
        store.gc(keep_last=1, grace_seconds=float(grace))  # the library refuses it too
    assert store.versions("root.train", "ckpt") == before
