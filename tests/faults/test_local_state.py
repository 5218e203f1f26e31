"""A damaged stat cache is only a cache: detected, rebuilt, never a wrong answer.

The state file lives outside the store (one per machine or work). Whatever
happens to it — garbage, truncation, an old schema, rows with nonsense in them —
snapshots and checkouts must go on working and record the true content.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest
from conftest import write_tree

from cas_storage import Store
from faults.faultkit import read_files


def _damage(state: str, how: str) -> None:
    if how == "garbage":
        with open(state, "wb") as out:
            out.write(os.urandom(8192))
    elif how == "truncated":
        with open(state, "r+b") as out:
            out.truncate(os.path.getsize(state) // 2 or 1)
    elif how == "empty":
        open(state, "wb").close()
    else:
        conn = sqlite3.connect(state)
        if how == "old schema":
            conn.execute("DROP TABLE trees")
            conn.execute("CREATE TABLE trees (root TEXT PRIMARY KEY, digest TEXT)")
            conn.execute("DROP TABLE checkouts")
        elif how == "nonsense rows":
            # Cut short, text instead of bytes, the other half's bytes flipped.
            conn.execute("UPDATE trees SET body = substr(body, 1, 40) WHERE rowid % 3 = 0")
            conn.execute("UPDATE trees SET body = 'big' WHERE rowid % 3 = 1")
            conn.execute(
                "UPDATE trees SET body = substr(body, 1, length(body) / 2) || "
                "randomblob(length(body) - length(body) / 2) WHERE rowid % 3 = 2"
            )
            conn.execute("INSERT INTO trees VALUES (NULL, NULL)")
            conn.execute("UPDATE checkouts SET manifest = NULL")
        conn.commit()
        conn.close()


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "old schema", "nonsense rows"])
def test_damaged_state_file_is_rebuilt(tmp_path, how):
    state = str(tmp_path / "state.db")
    src = write_tree(tmp_path / "src", {"a": "one", "b/c": "two", "big": os.urandom(3_000_000)})
    store = Store.open(tmp_path / ".cas", state=state)
    store.snapshot("w", "p", src)
    store.checkout("w", "p", tmp_path / "dest")
    store.close()
    # Old stats so the (damaged) cache would be trusted if it were believed.
    for name in ("a", "b/c", "big"):
        os.utime(src / name, ns=(10**9, 10**9))
    for extra in ("-wal", "-shm"):
        if os.path.exists(state + extra):
            sqlite3.connect(state).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    _damage(state, how)

    rebuilt = how in ("garbage", "truncated", "old schema")
    with pytest.warns(UserWarning, match="rebuilding") if rebuilt else contextlib.nullcontext():
        store = Store.open(tmp_path / ".cas", state=state)
    (src / "a").write_text("ONE")  # same size, must still be seen as changed
    os.utime(src / "a", ns=(10**9, 10**9))
    v = store.snapshot("w", "p", src)
    assert v.number == 2
    store.checkout("w", "p", tmp_path / "dest", overwrite=True)
    assert read_files(tmp_path / "dest") == read_files(src)
    store.checkout("w", "p", tmp_path / "fresh")
    assert read_files(tmp_path / "fresh") == read_files(src)
    store.close()
    # The cache works again afterwards: a well-formed SQLite file with the right tables.
    conn = sqlite3.connect(state)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM trees").fetchone()[0] > 0
    conn.close()


@pytest.mark.filterwarnings("ignore:the local stat cache")
def test_state_damaged_while_open_does_not_fail_a_snapshot(tmp_path):
    state = str(tmp_path / "state.db")
    src = write_tree(tmp_path / "src", {f"f{i}": f"content {i}" * 500 for i in range(50)})
    store = Store.open(tmp_path / ".cas", state=state)
    store.snapshot("w", "p", src)
    with open(state, "r+b") as out:  # another program scribbles over the open cache
        out.seek(0)
        out.write(os.urandom(os.path.getsize(state)))
    (src / "f0").write_text("changed")
    assert store.snapshot("w", "p", src).number == 2
    store.checkout("w", "p", tmp_path / "dest")
    assert read_files(tmp_path / "dest") == read_files(src)
