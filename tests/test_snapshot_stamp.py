"""The unchanged re-put's quick check: a folder as this machine's last snapshot left it.

``held_as_stamped`` lets an unchanged ``snapshot`` return the latest version with one
``lstat`` per file and folder, without walking the folder or building its manifest. So
it must never say "unchanged" of a folder that differs in anything a manifest holds:
content, kind, mode, link target, a name more or less. Each case below changes one such
thing after a snapshot; the next snapshot must record a new version, and a checkout of
it must be the folder exactly.
"""

from __future__ import annotations

import os
import pathlib
import random
import time
from collections.abc import Callable

import pytest
from treechanges import CHANGES, listing, sample_tree

from cas_storage import Store
from cas_storage.localstate import KnownFiles
from cas_storage.stamps import held_as_stamped


@pytest.fixture()
def snapped(store: Store, tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder snapshotted once as version 1, past every racy window: its stamp vouches."""
    src = sample_tree(tmp_path / "src")
    time.sleep(0.05)  # files and folders made within the racy window are never vouched for
    assert store.snapshot("w", "p", src).number == 1
    return src


def checked_out(store: Store, number: int, dest: pathlib.Path) -> dict:
    store.checkout("w", "p", dest, version=number)
    return listing(dest)


def test_an_unchanged_folder_is_answered_by_its_stamp_without_a_walk(
    store, snapped, surveys, tmp_path
):
    assert store.snapshot("w", "p", snapped).number == 1
    assert surveys == []
    # As in a new process: the stamp and the stat cache are read back from the state file.
    again = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    try:
        assert again.snapshot("w", "p", snapped).number == 1
    finally:
        again.close()
    assert surveys == []
    assert [v.number for v in store.versions("w", "p")] == [1]


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_any_change_after_a_snapshot_is_recorded(store, snapped, surveys, tmp_path, change):
    CHANGES[change](snapped)
    wanted = listing(snapped)
    assert store.snapshot("w", "p", snapped).number == 2
    assert surveys == [str(snapped)]  # the stamp did not vouch: the folder was walked
    assert checked_out(store, 2, tmp_path / "out") == wanted
    time.sleep(0.05)
    # The change came moments before that walk (its racy window): this one may walk too.
    assert store.snapshot("w", "p", snapped).number == 2
    walked = len(surveys)
    assert store.snapshot("w", "p", snapped).number == 2
    assert len(surveys) == walked  # stamped anew, past every racy window: no walk


def test_a_checkout_into_the_folder_that_only_chmods_a_file_is_not_taken_for_the_stamp(
    store, snapped, tmp_path
):
    """A checkout rewrites the stat-cache record but may move no folder's mtime (a chmod
    renames nothing): the stamp names the record it was taken with, so it no longer
    vouches, and the folder, now as version 1 again, is recorded as version 3."""
    os.chmod(snapped / "run.sh", 0o700)
    assert store.snapshot("w", "p", snapped).number == 2
    time.sleep(0.05)
    store.checkout("w", "p", snapped, version=1, overwrite=True)
    assert (snapped / "run.sh").stat().st_mode & 0o777 == 0o755
    time.sleep(0.05)
    assert store.snapshot("w", "p", snapped).number == 3
    assert checked_out(store, 3, tmp_path / "v3") == checked_out(store, 1, tmp_path / "v1")


def test_another_writers_newer_version_is_not_answered_by_the_stamp(store, snapped, tmp_path):
    """The stamp says which manifest the folder holds; when another writer recorded a
    newer version of the key meanwhile, the folder is recorded again as the next one."""
    other = sample_tree(tmp_path / "other")
    (other / "a.txt").write_text("other writer")
    assert store.snapshot("w", "p", other).number == 2
    assert store.snapshot("w", "p", snapped).number == 3
    assert checked_out(store, 3, tmp_path / "v3") == listing(snapped)


def test_a_folder_changed_within_the_racy_window_of_the_walk_is_walked_again(
    store, snapped, surveys
):
    """A folder whose mtime is not older than the walk's start (by the racy window) could
    change again within that timestamp tick without moving it: its stamp must not vouch.
    Files are old here, so only the folders' rule can ask for the walk."""
    ahead = time.time_ns() + 10**9  # as a writer with a clock ahead of ours leaves it
    os.utime(snapped / "sub", ns=(ahead, ahead))
    for _ in range(2):
        assert store.snapshot("w", "p", snapped).number == 1  # a folder's times: no change
    assert surveys == [str(snapped), str(snapped)]


def test_a_file_the_snapshot_skipped_leaves_no_stamp(store, tmp_path, surveys):
    """A fifo is left out of the manifest with a warning each time; a stamp would hide it."""
    src = sample_tree(tmp_path / "src")
    os.mkfifo(src / "pipe")
    time.sleep(0.05)
    for _ in range(2):
        with pytest.warns(UserWarning, match="pipe"):
            assert store.snapshot("w", "p", src).number == 1
    assert surveys == [str(src), str(src)]


def test_a_stamp_vouches_only_with_the_record_it_was_taken_with(store, snapped):
    """The files' part of the check is their stat-cache record: once that record is
    rewritten (here: to claim other content for ``a.txt`` at the same stat, as a checkout
    of other bytes would), the stamp no longer says what the folder's manifest is."""
    source = str(snapped)
    stamp = store.state.stamp_of(source)
    assert stamp is not None and held_as_stamped(source, store.state.under(source), stamp)
    known = store.state.under(source)
    records = {path: known[path] for path in known}
    claimed = records[f"{source}/a.txt"]._replace(digest="0" * 32)
    records[f"{source}/a.txt"] = claimed
    store.state.record_tree(source, KnownFiles.of({}), [], records)
    assert not held_as_stamped(source, store.state.under(source), stamp)


@pytest.mark.parametrize("body", ["", "{}", "[1, 2]", '{"tree": 1}', "not json"])
def test_a_damaged_stamp_is_not_believed(store, snapped, surveys, body):
    with store.state.conn as conn:
        conn.execute("UPDATE stamps SET body = ?", (body,))
    assert store.state.stamp_of(str(snapped)) is None
    assert store.snapshot("w", "p", snapped).number == 1
    assert surveys == [str(snapped)]  # walked, and stamped anew
    assert store.state.stamp_of(str(snapped)) is not None


def test_changes_right_after_each_snapshot_are_all_recorded(store, tmp_path, surveys):
    """300 rounds of: one change at random (or none), made moments after the last
    snapshot's walk, often within its timestamp tick, then a snapshot, which must be the
    folder exactly. Some rounds wait out the racy window first, so that unchanged rounds
    are answered by the stamp: the check is exercised, not bypassed."""
    rng = random.Random(1206)
    src = sample_tree(tmp_path / "src")
    names = ["a.txt", "run.sh", "sub/b.bin", "sub/deep/c"]

    def rewrite_same_size(d: pathlib.Path) -> None:
        name = rng.choice(names)
        if (d / name).is_file():
            st = (d / name).stat()
            (d / name).write_bytes(bytes(rng.randrange(256) for _ in range(st.st_size)))
            os.utime(d / name, ns=(st.st_atime_ns, st.st_mtime_ns))

    def add_or_remove(d: pathlib.Path) -> None:
        name = rng.choice(names)
        if (d / name).exists():
            os.unlink(d / name)
        else:
            (d / name).write_text(f"back {rng.random()}")

    changes: list[Callable[[pathlib.Path], object]] = [
        rewrite_same_size,
        add_or_remove,
        lambda d: os.chmod(d / "sub", rng.choice([0o755, 0o750])),
        lambda d: (d / "run.sh").exists() and os.chmod(d / "run.sh", rng.choice([0o755, 0o700])),
        lambda d: (d / "empty" / "x").mkdir() if not (d / "empty" / "x").exists() else None,
        lambda d: os.rmdir(d / "empty" / "x") if (d / "empty" / "x").exists() else None,
    ]
    answered = 0
    for r in range(300):
        if rng.random() < 0.3:
            time.sleep(0.015)  # past the racy window: the next unchanged round can be vouched for
        if rng.random() < 0.6:
            rng.choice(changes)(src)
        before = len(surveys)
        version = store.snapshot("w", "p", src)
        answered += len(surveys) == before
        out = tmp_path / "out" / str(r)
        store.checkout("w", "p", out, version=version.number)
        assert listing(out) == listing(src), f"round {r}: version {version.number}"
    assert answered >= 10  # the stamp answered unchanged rounds
