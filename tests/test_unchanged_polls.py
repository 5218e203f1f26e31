"""An unchanged re-get or re-put (a server polling a trainer's checkpoint) takes no lease.

On S3 the lease alone is three requests (create, list, delete); a poll that finds
nothing new is one listing of the latest version. Anything that differs — the
destination changed in any way, a newer version, a changed source — goes the
full way and ends correct. Each case runs on a local store and on moto's S3.
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import stat
from collections.abc import Callable
from typing import Any

import pytest
from conftest import read_tree, write_tree
from treechanges import listing

from cas_storage import Store

WORK, PATH = "root.train", "ckpt"
FILES = {
    "model.pt": os.urandom(2_500_000),  # chunked
    "cfg.json": '{"lr": 0.1}',
    "sub/a.txt": "a",
    "sub/deep/b.txt": "b",
}


@pytest.fixture(params=["local", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "local":
        return str(tmp_path / ".cas")
    return str(request.getfixturevalue("s3_url"))


class Sent:
    """The S3 requests a store's client sends (nothing for a local store)."""

    def __init__(self, store: Store) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        fs = getattr(store.objects, "fs", None)
        if fs is not None and hasattr(fs, "s3"):
            fs.s3.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> collections.Counter[str]:
        taken, self.counts = self.counts, collections.Counter()
        return taken


def _stats(root: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.relative_to(root).as_posix(): (
            p.lstat().st_ino,
            p.lstat().st_mtime_ns,
            p.lstat().st_ctime_ns,
        )
        for p in root.rglob("*")
    }


def _source(tmp_path: pathlib.Path) -> pathlib.Path:
    src = write_tree(tmp_path / "src", FILES)
    os.symlink("sub/a.txt", src / "link")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    return src


def _old(path: pathlib.Path) -> None:
    """Age a file past the stat cache's racy window, so the cache vouches for it."""
    os.utime(path, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9), follow_symlinks=False)


def _age(root: pathlib.Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            _old(p)


def test_unchanged_reget_takes_no_lease_and_changes_nothing(url: str, tmp_path: pathlib.Path):
    src = _source(tmp_path)
    Store.open(url, state=str(tmp_path / "writer.db")).snapshot(WORK, PATH, src)
    reader = Store.open(url, state=str(tmp_path / "reader.db"))
    dest = tmp_path / "dest"
    first = reader.checkout(WORK, PATH, dest)
    assert first.files_transferred == len(FILES) + 1
    sent, before = Sent(reader), _stats(dest)
    again = reader.checkout(WORK, PATH, dest, overwrite=True)
    assert (again.version, again.files_transferred, again.bytes_transferred) == (1, 0, 0)
    if "://" in url:
        assert sent.take() == {"ListObjectsV2": 1}  # the latest version; no lease
    assert _stats(dest) == before and listing(dest) == listing(src)
    # Another process on this machine (the manifest not in memory): one GET more.
    later = Store.open(url, state=str(tmp_path / "reader.db"))
    sent = Sent(later)
    assert later.checkout(WORK, PATH, dest, overwrite=True).files_transferred == 0
    if "://" in url:
        assert sum(sent.take().values()) <= 2
    assert _stats(dest) == before
    assert not (tmp_path / ".dest.cas-lock").exists()


def test_unchanged_reput_takes_no_lease_and_records_nothing(url: str, tmp_path: pathlib.Path):
    src = _source(tmp_path)
    _age(src)
    store = Store.open(url, state=str(tmp_path / "writer.db"))
    v1 = store.snapshot(WORK, PATH, src)
    sent = Sent(store)
    assert store.snapshot(WORK, PATH, src) == v1
    if "://" in url:
        assert sent.take() == {"ListObjectsV2": 1}  # the latest version; no lease
    assert [v.number for v in store.versions(WORK, PATH)] == [1]
    # A file inside the racy window cannot be vouched for: the full path, still nothing new.
    (src / "cfg.json").write_text('{"lr": 0.1}')
    sent.take()
    assert store.snapshot(WORK, PATH, src) == v1
    if "://" in url:  # lease create, list, latest, manifest, lease check, lease delete
        assert sum(sent.take().values()) <= 6
    assert [v.number for v in store.versions(WORK, PATH)] == [1]


def _edit_content(dest: pathlib.Path) -> None:
    (dest / "cfg.json").write_text('{"lr": 0.9}')  # same size, other bytes


def _edit_old_stat(dest: pathlib.Path) -> None:
    (dest / "sub" / "a.txt").write_text("z")
    _old(dest / "sub" / "a.txt")  # an mtime from long ago: ctime still shows the write


def _add_file(dest: pathlib.Path) -> None:
    (dest / "sub" / "extra.bin").write_bytes(b"extra")


def _add_folder(dest: pathlib.Path) -> None:
    (dest / "new" / "deeper").mkdir(parents=True)


def _remove_file(dest: pathlib.Path) -> None:
    (dest / "sub" / "deep" / "b.txt").unlink()


def _remove_folder(dest: pathlib.Path) -> None:
    (dest / "sub" / "deep" / "b.txt").unlink()
    (dest / "sub" / "deep").rmdir()


def _file_mode(dest: pathlib.Path) -> None:
    (dest / "run.sh").chmod(0o600)


def _folder_mode(dest: pathlib.Path) -> None:
    (dest / "sub").chmod(0o700)


def _retarget_link(dest: pathlib.Path) -> None:
    (dest / "link").unlink()
    os.symlink("cfg.json", dest / "link")


def _file_for_link(dest: pathlib.Path) -> None:
    (dest / "link").unlink()
    (dest / "link").write_text("a")


def _folder_for_file(dest: pathlib.Path) -> None:
    (dest / "cfg.json").unlink()
    (dest / "cfg.json").mkdir()


def _fifo(dest: pathlib.Path) -> None:
    os.mkfifo(dest / "sub" / "pipe")


def _gone(dest: pathlib.Path) -> None:
    shutil.rmtree(dest)


def _file_for_folder(dest: pathlib.Path) -> None:
    shutil.rmtree(dest)
    dest.write_text("not a folder")


EDITS: list[Callable[[pathlib.Path], None]] = [
    _edit_content,
    _edit_old_stat,
    _add_file,
    _add_folder,
    _remove_file,
    _remove_folder,
    _file_mode,
    _folder_mode,
    _retarget_link,
    _file_for_link,
    _folder_for_file,
    _fifo,
    _gone,
    _file_for_folder,
]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__.strip("_") for e in EDITS])
def test_a_reget_after_the_destination_changed_restores_it(
    url: str, tmp_path: pathlib.Path, edit: Callable[[pathlib.Path], None]
):
    src = _source(tmp_path)
    Store.open(url, state=str(tmp_path / "writer.db")).snapshot(WORK, PATH, src)
    reader = Store.open(url, state=str(tmp_path / "reader.db"))
    dest = tmp_path / "dest"
    reader.checkout(WORK, PATH, dest)
    _age(dest)  # the stat cache records ctimes, so it still vouches for untouched files
    reader.checkout(WORK, PATH, dest, overwrite=True)
    edit(dest)
    got = reader.checkout(WORK, PATH, dest, overwrite=True)
    assert got.version == 1
    assert listing(dest) == listing(src)
    assert reader.checkout(WORK, PATH, dest, overwrite=True).files_transferred == 0


def test_a_reget_after_a_new_version_fetches_it(url: str, tmp_path: pathlib.Path):
    src = _source(tmp_path)
    writer = Store.open(url, state=str(tmp_path / "writer.db"))
    writer.snapshot(WORK, PATH, src)
    reader = Store.open(url, state=str(tmp_path / "reader.db"))
    dest = tmp_path / "dest"
    reader.checkout(WORK, PATH, dest)
    reader.checkout(WORK, PATH, dest, overwrite=True)
    (src / "cfg.json").write_text('{"lr": 0.01}')
    (src / "sub" / "deep" / "b.txt").unlink()
    assert writer.snapshot(WORK, PATH, src).number == 2
    got = reader.checkout(WORK, PATH, dest, overwrite=True)
    assert (got.version, got.files_transferred, got.bytes_transferred) == (2, 1, 12)
    assert listing(dest) == listing(src)
    # An older version asked for by number is checked out too (and then the latest again).
    assert reader.checkout(WORK, PATH, dest, version=1, overwrite=True).version == 1
    assert read_tree(dest)["sub/deep/b.txt"] == b"b"
    assert reader.checkout(WORK, PATH, dest, overwrite=True).version == 2
    assert listing(dest) == listing(src)


def test_a_reget_of_another_part_into_the_same_destination_is_a_checkout(
    url: str, tmp_path: pathlib.Path
):
    src = _source(tmp_path)
    Store.open(url, state=str(tmp_path / "writer.db")).snapshot(WORK, PATH, src)
    reader = Store.open(url, state=str(tmp_path / "reader.db"))
    dest = tmp_path / "dest"
    reader.checkout(WORK, PATH, dest, inner="sub")
    reader.checkout(WORK, PATH, dest, inner="sub/deep", overwrite=True)
    assert read_tree(dest) == {"b.txt": b"b"}


def test_a_changed_reput_records_what_changed(url: str, tmp_path: pathlib.Path):
    src = _source(tmp_path)
    _age(src)
    store = Store.open(url, state=str(tmp_path / "writer.db"))
    store.snapshot(WORK, PATH, src)
    store.snapshot(WORK, PATH, src)
    checks = tmp_path / "checks"
    for number, edit in enumerate(
        [_remove_file, _file_mode, _folder_mode, _retarget_link, _add_folder, _edit_old_stat],
        start=2,
    ):
        edit(src)  # the first five change no file's content: every file still vouched for
        v = store.snapshot(WORK, PATH, src)
        assert v.number == number, edit.__name__
        store.checkout(WORK, PATH, checks, overwrite=True)
        assert listing(checks) == listing(src), edit.__name__
        assert store.snapshot(WORK, PATH, src) == v
    assert len(store.versions(WORK, PATH)) == 7


def test_a_single_file_reput_and_reget(url: str, tmp_path: pathlib.Path):
    src = tmp_path / "model.pt"
    src.write_bytes(os.urandom(100_000))
    _old(src)
    store = Store.open(url, state=str(tmp_path / "writer.db"))
    v1 = store.snapshot(WORK, "model.pt", src)
    sent = Sent(store)
    assert store.snapshot(WORK, "model.pt", src) == v1
    dest = tmp_path / "copy.pt"
    store.checkout(WORK, "model.pt", dest)
    sent.take()
    assert store.checkout(WORK, "model.pt", dest, overwrite=True).files_transferred == 0
    if "://" in url:
        assert sent.take() == {"ListObjectsV2": 1}
    dest.chmod(0o600)
    assert store.checkout(WORK, "model.pt", dest, overwrite=True).files_transferred == 0
    assert stat.S_IMODE(dest.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)
    src.write_bytes(os.urandom(100_000))
    assert store.snapshot(WORK, "model.pt", src).number == 2
    assert store.checkout(WORK, "model.pt", dest, overwrite=True).files_transferred == 1
    assert dest.read_bytes() == src.read_bytes()
