"""Reading commands on a store the user cannot write, and a catalog.db that is no catalog.

The store is copied and made read-only (``chmod -R a-w``); every reading command
then runs as an ordinary user (``nobody`` through ``setpriv``, since root ignores
file modes) and must succeed and leave every byte and every time of the store as
it was, creating nothing (no ``-wal``/``-shm`` files either). A ``catalog.db``
that is empty, or another program's database, beside stored objects is damage:
one clear line, not an empty store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from cas_storage import Store
from faults.faultkit import tree_for, write_exact

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _fingerprint(root: str) -> dict[str, tuple[int, int, str]]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest = hashlib.sha256(open(full, "rb").read()).hexdigest()
            out[os.path.relpath(full, root)] = (st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def public_dir():
    """A temp folder an ordinary user can enter (pytest's tmp_path is root's alone)."""
    folder = tempfile.mkdtemp(prefix="cas-ro-")
    os.chmod(folder, 0o755)
    yield folder
    for dirpath, dirs, _ in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(folder)


def _nobody_can_run_python() -> bool:
    """Whether this interpreter runs as ``nobody`` (a checkout below a private folder, or a
    Python under root's home, cannot: then the modes are checked as root alone)."""
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "pass"], capture_output=True)
    return probe.returncode == 0


def _cas(store: str, *args: str, as_nobody: bool, state: str) -> subprocess.CompletedProcess:
    prefix = NOBODY if as_nobody else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "cas_storage.cli", "--store", store, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CAS_STATE": state, "HOME": os.path.dirname(state)},
    )


def test_reading_commands_work_on_a_read_only_store_and_write_nothing(public_dir):
    original = os.path.join(public_dir, "store")
    store = Store.open(original, state=os.path.join(public_dir, "state.db"))
    src = os.path.join(public_dir, "src")
    import pathlib

    for seed in ("one", "two"):
        write_exact(pathlib.Path(src), tree_for(seed))
        store.snapshot("root.train", "ckpt", src)
    store.close()
    ro = os.path.join(public_dir, "ro-store")
    shutil.copytree(original, ro)
    subprocess.run(["chmod", "-R", "a-w", ro], check=True)
    home = os.path.join(public_dir, "home")
    os.mkdir(home)
    os.chmod(home, 0o777)
    state = os.path.join(home, "state.db")
    before = _fingerprint(ro)
    commands = [
        ["ls"],
        ["log", "root.train", "ckpt"],
        ["show", "root.train", "ckpt", "--version", "1"],
        ["cat", "root.train", "ckpt", "seed.txt"],
        ["diff", "root.train", "ckpt", "1", "2"],
        ["stats"],
        ["verify"],
        ["--json", "ls"],
    ]
    nobody = _nobody_can_run_python()
    users = (True, False) if nobody else (False,)
    for as_nobody in users:  # nobody: the modes bind; root: must not write anyway
        for command in commands:
            done = _cas(ro, *command, as_nobody=as_nobody, state=state)
            assert done.returncode == 0, f"cas {' '.join(command)}: {done.stderr}"
        assert _fingerprint(ro) == before, "a reading command changed the read-only store"
    cat = _cas(ro, "cat", "root.train", "ckpt", "seed.txt", as_nobody=nobody, state=state)
    assert cat.stdout == "two"
    # Writing to it as an ordinary user is a clear one-line error.
    if not nobody:
        return
    put = _cas(ro, "put", "root.train", "ckpt", src, as_nobody=True, state=state)
    assert put.returncode == 1 and put.stderr.count("\n") == 1 and "Traceback" not in put.stderr
    assert _fingerprint(ro) == before


@pytest.mark.parametrize("damage", ["empty", "another program's database"])
def test_a_catalog_that_is_no_catalog_is_damage_not_an_empty_store(tmp_path, damage):
    root = str(tmp_path / "store")
    store = Store.open(root, state=str(tmp_path / "s.db"))
    write_exact(tmp_path / "src", tree_for("kept"))
    store.snapshot("w", "p", tmp_path / "src")
    store.close()
    catalog = os.path.join(root, "catalog.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(catalog + suffix):
            os.unlink(catalog + suffix)
    if damage == "empty":
        open(catalog, "wb").close()
    else:
        import sqlite3

        with sqlite3.connect(catalog) as other:
            other.execute("CREATE TABLE notes (text TEXT)")
    for command in (["ls"], ["put", "w", "p", str(tmp_path / "src")]):
        done = _cas(root, *command, as_nobody=False, state=str(tmp_path / "s.db"))
        assert done.returncode == 1, f"cas {command[0]} took damage for an empty store"
        assert "not a cas catalog" in done.stderr and done.stderr.count("\n") == 1
    assert stat.S_ISREG(os.stat(catalog).st_mode)
