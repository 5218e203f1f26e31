"""File and work names that are not valid UTF-8: a clear refusal naming them, never a codec error.

A manifest holds names as UTF-8 text, so a file whose name is not valid UTF-8
could not be restored byte-exactly: the snapshot refuses it, naming the file
(its bytes), and records nothing. Such names elsewhere — a destination folder,
an extra file a checkout removes, a source folder's own path — just work.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cas_storage import Store
from cas_storage.errors import InvalidName


def _fs(raw: bytes) -> str:
    return os.fsdecode(raw)


def test_a_file_name_that_is_not_utf8_is_refused_naming_it(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    src = os.fsencode(tmp_path / "src")
    os.makedirs(src + b"/sub\xff")
    with open(src + b"/sub\xff/w\xfe.bin", "wb") as out:
        out.write(b"weights")
    with open(src + b"/ok.txt", "wb") as out:
        out.write(b"ok")
    with pytest.raises(InvalidName, match=r"sub\\xff.*not valid UTF-8"):
        store.snapshot("w", "p", _fs(src))
    assert store.versions("w", "p") == []
    os.symlink(b"target\xff", src + b"/link")
    os.rename(src + b"/sub\xff", src + b"/sub")
    os.rename(src + b"/sub/w\xfe.bin", src + b"/sub/w.bin")
    with pytest.raises(InvalidName, match=r"link target b'target\\xff'"):
        store.snapshot("w", "p", _fs(src))
    done = subprocess.run(
        [sys.executable, "-m", "cas_storage.cli", "--store", str(tmp_path / ".cas"), "put",
         "w", "p", _fs(src)],
        capture_output=True, text=True, env={**os.environ, "CAS_STATE": str(tmp_path / "s.db")},
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "not valid UTF-8" in done.stderr and "Traceback" not in done.stderr


def test_a_work_name_or_key_that_is_not_utf8_is_refused(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match="invalid work name .*not valid UTF-8"):
        store.snapshot(_fs(b"root.\xff"), "p", tmp_path / "src")
    with pytest.raises(ValueError, match="invalid shared path .*not valid UTF-8"):
        store.snapshot("w", _fs(b"out\xff"), tmp_path / "src")


def test_checkouts_and_sources_at_paths_that_are_not_utf8_work(tmp_path):
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "s.db"))
    base = os.fsencode(tmp_path)
    src = base + b"/src\xff"
    os.makedirs(src)
    with open(src + b"/a.txt", "wb") as out:
        out.write(b"a")
    store.snapshot("w", "p", _fs(src))  # the folder's own path is not stored
    store.snapshot("w", "p", _fs(src))  # and the stat cache copes with it
    dest = base + b"/dest\xfe"
    store.checkout("w", "p", _fs(dest))
    with open(dest + b"/junk\xff", "wb") as out:
        out.write(b"not in the version")
    store.checkout("w", "p", _fs(dest), overwrite=True)
    assert os.listdir(dest) == [b"a.txt"]
