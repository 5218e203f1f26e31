"""The unchanged re-get's quick check: a destination held exactly as its record says.

``held_as_recorded`` lets an unchanged ``get(overwrite=True)`` return without a plan,
so it must never say "unchanged" of a tree that differs in anything a checkout sets:
content, kind, mode, link target, a name more or less. Each case below changes one
such thing after a checkout, then asks: the quick check must say no, ``plan`` must
see the change, and the next checkout must restore the version exactly.
"""

from __future__ import annotations

import os
import pathlib
import time

import pytest
from treechanges import CHANGES, listing, replace_file_by_copy, sample_tree

from cas_storage import Store
from cas_storage.checkout import _Writer, held_as_recorded, load_manifest, plan
from cas_storage.localstate import NOTHING_KNOWN
from cas_storage.manifest import Manifest


def settle(store: Store, dest: pathlib.Path) -> None:
    """Get again once the racy window is over, so that every file's record vouches for it
    (a file recorded within its write's timestamp tick is hashed, not trusted)."""
    time.sleep(0.05)
    store.checkout("w", "p", dest, overwrite=True)


def quick_check(store: Store, dest: pathlib.Path) -> tuple[bool, bool]:
    """(what ``held_as_recorded`` says, whether ``plan`` finds nothing to change)."""
    manifest = load_manifest(store.objects, store.version("w", "p").manifest)
    known = store.state.under(str(dest))
    held = held_as_recorded(str(dest), manifest, known)
    writer = _Writer(store.objects, known, "test", None, 0)
    return held, plan(str(dest), manifest, writer).changes_nothing()


@pytest.fixture()
def checked_out(store: Store, tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict]:
    src = sample_tree(tmp_path / "src")
    store.snapshot("w", "p", src)
    dest = tmp_path / "dest"
    store.checkout("w", "p", dest)
    settle(store, dest)
    return dest, listing(dest)


def test_a_tree_as_checked_out_is_held_and_the_reget_writes_nothing(store, checked_out):
    dest, wanted = checked_out
    assert quick_check(store, dest) == (True, True)
    result = store.checkout("w", "p", dest, overwrite=True)
    assert (result.files_transferred, result.bytes_transferred) == (0, 0)
    assert listing(dest) == wanted


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_any_change_is_seen_and_restored(store, checked_out, change):
    dest, wanted = checked_out
    CHANGES[change](dest)
    assert quick_check(store, dest) == (False, False)
    store.checkout("w", "p", dest, overwrite=True)
    assert listing(dest) == wanted
    settle(store, dest)
    assert quick_check(store, dest) == (True, True)


def test_a_file_the_record_cannot_vouch_for_is_left_to_the_plan(store, checked_out):
    dest, wanted = checked_out
    replace_file_by_copy(dest)
    held, unchanged = quick_check(store, dest)
    assert (held, unchanged) == (False, True)  # plan hashes it: same bytes, nothing to write
    result = store.checkout("w", "p", dest, overwrite=True)
    assert result.files_transferred == 0 and listing(dest) == wanted
    settle(store, dest)  # it was written within the racy window of that checkout's record
    assert quick_check(store, dest) == (True, True)  # now recorded with its new stat


def test_a_checkouts_own_lock_and_staging_names_inside_are_not_user_files(store, checked_out):
    dest, _ = checked_out
    (dest / "sub" / ".deep.cas-lock").write_text("")  # a nested checkout's, as walk skips
    assert quick_check(store, dest) == (True, True)


def test_no_record_or_a_single_file_is_left_to_the_plan(store, checked_out, tmp_path):
    dest, _ = checked_out
    manifest = load_manifest(store.objects, store.version("w", "p").manifest)
    assert not held_as_recorded(str(dest), manifest, NOTHING_KNOWN)
    (tmp_path / "one").write_text("one")
    store.snapshot("w", "one", tmp_path / "one")
    single: Manifest = load_manifest(store.objects, store.version("w", "one").manifest)
    store.checkout("w", "one", tmp_path / "one-out")
    time.sleep(0.05)
    known = store.state.under(str(tmp_path / "one-out"))
    assert not held_as_recorded(str(tmp_path / "one-out"), single, known)


def test_a_folder_that_cannot_be_read_is_left_to_the_plan(store, checked_out, monkeypatch):
    dest, _ = checked_out
    real_listdir = os.listdir

    def refusing(fd):  # as for a folder without read permission (root reads any)
        if os.path.samefile(fd, dest / "sub"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(fd)

    monkeypatch.setattr(os, "listdir", refusing)
    manifest = load_manifest(store.objects, store.version("w", "p").manifest)
    assert not held_as_recorded(str(dest), manifest, store.state.under(str(dest)))


def test_a_record_of_other_content_is_not_taken_for_the_new_version(store, checked_out):
    """Same names, sizes and stats, but the version wants other bytes in ``a.txt``."""
    dest, _ = checked_out
    src = dest.parent / "src"
    (src / "a.txt").write_text("ALPHA")  # same size as "alpha"
    store.snapshot("w", "p", src)
    newer = load_manifest(store.objects, store.version("w", "p").manifest)
    assert not held_as_recorded(str(dest), newer, store.state.under(str(dest)))
    store.checkout("w", "p", dest, overwrite=True)
    assert (dest / "a.txt").read_text() == "ALPHA"
