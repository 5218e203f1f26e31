"""The unchanged re-get without a walk: a folder as this machine's last checkout left it.

A checkout of a whole folder leaves a stamp (``stamps.stamp_of_checkout``); the next
``get(overwrite=True)`` of the same version checks it with one ``lstat`` per file and
folder and returns, without listing a folder or even reading the manifest. So a stamp
must never vouch for a folder that differs from its version in anything a checkout
sets: content, kind, mode, link target, a name more or less; and a checkout must
never trust a snapshot's stamp, which differs at the edges.
"""

from __future__ import annotations

import os
import pathlib
import stat
import time

import pytest
from treechanges import CHANGES, listing, sample_tree

from cas_storage import Store
from cas_storage import checkout as checkout_module
from cas_storage.checkout import load_manifest
from cas_storage.stamps import held_as_stamped, stamp_of_checkout


@pytest.fixture()
def dest(store: Store, tmp_path: pathlib.Path) -> pathlib.Path:
    """The sample tree, stored as version 1 and checked out once (no settling after)."""
    store.snapshot("w", "p", sample_tree(tmp_path / "src"))
    out = tmp_path / "dest"
    store.checkout("w", "p", out)
    return out


def refuse_manifest_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on any manifest read fails: a re-get the stamp answers reads none."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the manifest was read")

    monkeypatch.setattr(checkout_module, "load_manifest", refuse)


def held(store: Store, dest: pathlib.Path) -> bool:
    stamp = store.state.stamp_of(str(dest))
    assert stamp is not None
    return held_as_stamped(str(dest), store.state.under(str(dest)), stamp)


def test_a_folder_checkout_leaves_a_stamp_that_vouches_at_once(store, dest):
    stamp = store.state.stamp_of(str(dest))
    assert stamp is not None and stamp.by == "checkout"
    assert stamp.manifest == store.version("w", "p").manifest
    assert held(store, dest)  # the checkout waited out the racy window of what it wrote


def test_an_unchanged_reget_reads_no_manifest(store, dest, monkeypatch, tmp_path):
    refuse_manifest_reads(monkeypatch)
    wanted = listing(dest)
    result = store.checkout("w", "p", dest, overwrite=True)
    assert (result.version, result.files_transferred, result.bytes_transferred) == (1, 0, 0)
    # As in a new process (every `cas get`): the stamp is read back from the state file.
    again = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    try:
        assert again.checkout("w", "p", dest, overwrite=True).files_transferred == 0
    finally:
        again.close()
    assert listing(dest) == wanted


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_any_change_is_seen_and_restored(store, dest, monkeypatch, change):
    wanted = listing(dest)
    CHANGES[change](dest)
    assert not held(store, dest)
    store.checkout("w", "p", dest, overwrite=True)
    assert listing(dest) == wanted
    # That checkout stamped the restored folder: the next re-get needs no manifest.
    refuse_manifest_reads(monkeypatch)
    assert store.checkout("w", "p", dest, overwrite=True).files_transferred == 0
    assert listing(dest) == wanted


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_stamp_taken_after_a_change_never_vouches_for_the_version(store, dest, change):
    """A checkout stamps what it wrote, but someone may change the folder between its
    last write and its stamp: the stamp then either is not made (its listing shows the
    change) or does not hold (the files' record shows it)."""
    digest = store.version("w", "p").manifest
    manifest = load_manifest(store.objects, digest)
    known = store.state.under(str(dest))
    CHANGES[change](dest)
    time.sleep(0.015)  # past the racy window: the folders' times alone would not tell
    stamp = stamp_of_checkout(str(dest), manifest, digest, known.record)
    assert stamp is None or not held_as_stamped(str(dest), known, stamp)


def test_a_snapshot_stamp_is_not_taken_for_a_checkout(store, dest):
    """A snapshot drops set-user-ID bits from the modes it records, a checkout clears
    them: after a snapshot of the checked-out folder (its stamp replaces the checkout's),
    the re-get must still find and clear the bit."""
    os.chmod(dest / "run.sh", 0o4755)
    assert store.snapshot("w", "p", dest).number == 1  # the same manifest
    assert store.state.stamp_of(str(dest)).by == "snapshot"
    store.checkout("w", "p", dest, overwrite=True)
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755


def test_a_checkout_stamp_is_not_taken_for_a_snapshot(store, dest, surveys):
    assert store.snapshot("w", "p", dest).number == 1
    assert surveys == [str(dest)]


def test_part_of_a_version_and_a_single_file_leave_no_stamp(store, tmp_path):
    store.snapshot("w", "p", sample_tree(tmp_path / "src"))
    store.checkout("w", "p", tmp_path / "sub", inner="sub")
    store.checkout("w", "p", tmp_path / "a.txt", inner="a.txt")
    assert store.state.stamp_of(str(tmp_path / "sub")) is None
    assert store.state.stamp_of(str(tmp_path / "a.txt")) is None
    assert listing(tmp_path / "sub") == listing(tmp_path / "src" / "sub")


def test_a_checkout_of_another_version_replaces_the_stamp(store, dest, tmp_path):
    (tmp_path / "src" / "a.txt").write_text("version 2")
    assert store.snapshot("w", "p", tmp_path / "src").number == 2
    store.checkout("w", "p", dest, overwrite=True)
    stamp = store.state.stamp_of(str(dest))
    assert stamp is not None and stamp.manifest == store.version("w", "p").manifest
    assert held(store, dest) and listing(dest) == listing(tmp_path / "src")
    store.checkout("w", "p", dest, version=1, overwrite=True)
    assert (dest / "a.txt").read_text() == "alpha"
    assert store.state.stamp_of(str(dest)).manifest == store.version("w", "p", 1).manifest
