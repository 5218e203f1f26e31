"""This machine's knowledge of its own files, kept beside them, not in the store.

* The **stat cache** maps a file's absolute path and ``stat`` identity (device,
  inode, size, mtime_ns, ctime_ns) to its content digest and chunk list, so a
  file that has not changed is never read again.
* **Checkout records** say which manifest each local checkout was last brought
  to, so the next checkout can swap manifests instead of copying everything.

A store on S3 is shared by many machines, each with its own files, so none of
this belongs in the store. One SQLite file per machine (or per work) holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any, NamedTuple

from .hashing import is_digest

BUSY_TIMEOUT_MS = 60_000
_STAT_COLUMNS = "path, dev, ino, size, mtime_ns, ctime_ns, recorded_ns, digest, chunks"
_CHECKOUT_COLUMNS = "dest, store_id, work, path, number, manifest"
#: A file modified within this window of being recorded is not trusted later:
#: another write in the same timestamp tick would leave its stat unchanged.
RACY_NS = 10_000_000


def default_path() -> str:
    """``$CAS_STATE``, else ``$XDG_CACHE_HOME/cas_storage/state.db`` (``~/.cache`` default)."""
    if env := os.environ.get("CAS_STATE"):
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "cas_storage", "state.db")


class Known(NamedTuple):
    """What the stat cache remembers of one file.

    A named tuple, not a dataclass: a re-put of 100,000 files loads 100,000 of these,
    and a tuple is built several times faster.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    recorded_ns: int
    digest: str
    chunks: tuple[tuple[str, int], ...]

    def matches(self, st: os.stat_result) -> bool:
        """True when ``st`` is the very file this record describes, unchanged since."""
        return self.describes(st) and self.mtime_ns < self.recorded_ns - RACY_NS

    def describes(self, st: os.stat_result) -> bool:
        """Same file and stat as recorded. Without ``matches``' racy-window check, so
        only good as a hint for content that is verified when used."""
        return (
            self.ino == st.st_ino
            and self.size == st.st_size
            and self.mtime_ns == st.st_mtime_ns
            and self.ctime_ns == st.st_ctime_ns
            and self.dev == st.st_dev
        )


def known_from_stat(
    st: os.stat_result, digest: str, chunks: tuple[tuple[str, int], ...] = ()
) -> Known:
    """A record of ``st``; ``remember`` stamps it with the time it is stored."""
    return Known(
        st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, 0, digest, chunks
    )


class LocalState:
    """The stat cache and checkout records in one SQLite file.

    >>> import tempfile, os
    >>> state = LocalState(os.path.join(tempfile.mkdtemp(), "state.db"))
    >>> state.under("/nowhere")
    {}
    """

    def __init__(self, filename: str | None = None) -> None:
        self.filename = filename or default_path()
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        self._local = threading.local()
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._rebuild(exc)

    def _setup(self) -> None:
        conn = self.conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS stat_cache (path TEXT PRIMARY KEY, dev INTEGER, "
            "ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, "
            "recorded_ns INTEGER, digest TEXT, chunks TEXT)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS checkouts (dest TEXT PRIMARY KEY, store_id TEXT, "
            "work TEXT, path TEXT, number INTEGER, manifest TEXT)"
        )
        # Tables of another layout (an old version, another program) fail here, not later.
        conn.execute(f"SELECT {_STAT_COLUMNS} FROM stat_cache LIMIT 1").fetchall()
        conn.execute(f"SELECT {_CHECKOUT_COLUMNS} FROM checkouts LIMIT 1").fetchall()

    def _rebuild(self, cause: Exception) -> None:
        """Start the cache afresh: it only saves work, so losing it loses nothing."""
        warnings.warn(
            f"the local stat cache {self.filename} was unusable ({cause}); rebuilding it",
            stacklevel=3,
        )
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.filename + suffix)
        self._setup()

    def _guard(self, exc: sqlite3.DatabaseError) -> None:
        """After a failed cache access: rebuild a damaged file, tolerate a busy or full one."""
        if isinstance(exc, sqlite3.OperationalError) and "no such" not in str(exc):
            warnings.warn(f"the local stat cache {self.filename}: {exc}", stacklevel=3)
        else:
            self._rebuild(exc)

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(
                self.filename, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    # -- stat cache -------------------------------------------------------
    def under(self, root: str) -> dict[str, Known]:
        """Every cached file at or below absolute path ``root``, in one query."""
        root = root.rstrip("/") or "/"
        if not _encodable(root):
            return {}  # nothing below a path that is not UTF-8 was ever cached
        try:
            rows = self.conn.execute(
                f"SELECT {_STAT_COLUMNS} FROM stat_cache WHERE path = ? OR (path > ? AND path < ?)",
                (root, root + "/", root + "0"),  # '0' sorts right after '/'
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._guard(exc)
            return {}
        found = {}
        for row in rows:
            known = _known(row)
            if known is not None:  # a row that does not parse is simply not known
                found[row[0]] = known
        return found

    def remember(self, files: dict[str, Known]) -> None:
        """Record (or refresh) what is known of these absolute paths."""
        if not files:
            return
        # Stamped now, after every file was written: the racy window is measured from here.
        now = time.time_ns()
        rows = [
            (
                p,
                k.dev,
                k.ino,
                k.size,
                k.mtime_ns,
                k.ctime_ns,
                now,
                k.digest,
                json.dumps(k.chunks) if k.chunks else "",
            )
            for p, k in files.items()
        ]
        self._write(
            f"INSERT OR REPLACE INTO stat_cache ({_STAT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows
        )

    def forget(self, paths: list[str]) -> None:
        if paths:
            self._write("DELETE FROM stat_cache WHERE path = ?", [(p,) for p in paths])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        # A path that is not valid UTF-8 (a file name in another encoding) cannot be a
        # key here: it is simply not cached, like a file never seen.
        rows = [r for r in rows if all(_encodable(v) for v in r if isinstance(v, str))]
        if not rows:
            return
        # The store is already written when the cache is updated: a cache that cannot be
        # written must not turn a finished snapshot or checkout into an error.
        try:
            with self._transaction() as conn:
                conn.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            self._guard(exc)

    # -- checkout records -------------------------------------------------
    def checkout_of(self, dest: str, store_id: str) -> str | None:
        """Manifest digest that ``dest`` was last checked out to from this store."""
        if not _encodable(dest):
            return None
        try:
            row = self.conn.execute(
                "SELECT manifest FROM checkouts WHERE dest = ? AND store_id = ?", (dest, store_id)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._guard(exc)
            return None
        return row[0] if row and isinstance(row[0], str) else None

    def record_checkout(
        self, dest: str, store_id: str, work: str, path: str, number: int, manifest: str
    ) -> None:
        self._write(
            f"INSERT OR REPLACE INTO checkouts ({_CHECKOUT_COLUMNS}) VALUES (?,?,?,?,?,?)",
            [(dest, store_id, work, path, number, manifest)],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _known(row: tuple[Any, ...]) -> Known | None:
    """The record in ``row``, or ``None`` when any field is not what was written."""
    _, dev, ino, size, mtime_ns, ctime_ns, recorded_ns, digest, chunks = row
    # type() is, not isinstance: this runs once per cached file on every load.
    if not (
        type(dev) is int
        and type(ino) is int
        and type(size) is int
        and type(mtime_ns) is int
        and type(ctime_ns) is int
        and type(recorded_ns) is int
        and is_digest(digest)
    ):
        return None
    parsed: tuple[tuple[str, int], ...] = ()
    if chunks:  # only large files have a chunk list
        try:
            parsed = tuple((d, s) for d, s in json.loads(chunks))
        except (TypeError, ValueError):
            return None
        if not all(is_digest(d) and type(n) is int for d, n in parsed):
            return None
    return Known(dev, ino, size, mtime_ns, ctime_ns, recorded_ns, digest, parsed)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
