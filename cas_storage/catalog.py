"""The catalog: which manifest is version N of ``(work, path)``.

``Catalog`` is the small interface snapshot/checkout rely on; ``SQLiteCatalog``
is the embedded implementation (``catalog.db``, plain ``sqlite3``). Every version
is an immutable record. The one write, ``create``, is a compare-and-swap on the
version number — it fails with ``VersionExists`` if another writer took that
number first — which an object store can also offer with a conditional put.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import StoreFormatError, UnknownVersion, VersionExists, not_found

#: 2: objects may lie in pack files (``packs.py``); a format-1 store is upgraded when
#: first opened for writing, so an older cas_storage refuses it instead of missing objects.
FORMAT = 2
BUSY_TIMEOUT_MS = 60_000
# SQLite primary result codes (sqlite3 exposes them as constants only from Python 3.11).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14


@dataclass(frozen=True)
class Version:
    """The ``number``-th snapshot of ``(work, path)``: manifest digest and totals."""

    work: str
    path: str
    number: int
    manifest: str
    created: datetime
    files: int
    bytes: int

    def label(self, inner: str = ".") -> str:
        """How errors and output name this version (or the folder ``inner`` of it):
        ``root.train:ckpt version 2``."""
        at = "" if inner == "." else f"/{inner}"
        return f"{self.work}:{self.path}{at} version {self.number}"

    def to_json(self) -> dict[str, Any]:
        return {
            "work": self.work,
            "path": self.path,
            "version": self.number,
            "manifest": self.manifest,
            "created": self.created.isoformat(),
            "files": self.files,
            "bytes": self.bytes,
        }


class Catalog:
    """What the store needs from a version index. Implementations keep records immutable."""

    def works(self) -> list[str]:
        raise NotImplementedError

    def paths(self, work: str) -> list[str]:
        raise NotImplementedError

    def versions(self, work: str, path: str) -> list[Version]:
        """All versions, oldest first; ``[]`` when there are none."""
        raise NotImplementedError

    def latest(self, work: str, path: str) -> Version | None:
        raise NotImplementedError

    def newest(self, work: str, path: str, count: int) -> list[Version]:
        """The newest ``count`` versions (``cas log -n``), oldest first."""
        return self.versions(work, path)[-count:] if count > 0 else []

    def create(self, version: Version) -> None:
        """Record ``version``; raise ``VersionExists`` if its number is taken."""
        raise NotImplementedError

    def delete(self, version: Version) -> None:
        """Compare-and-delete: remove ``version`` only if its record still names
        ``version.manifest`` (a number reused since is left alone)."""
        raise NotImplementedError

    def claim(self, name: str, owner: str) -> tuple[str, bool]:
        """Create the claim record ``name`` for ``owner`` unless one exists (atomically).

        Returns ``(holder, created)``: the owner named in the record now, and
        whether this call created it.
        """
        raise NotImplementedError

    def release(self, name: str, owner: str) -> None:
        """Remove the claim record ``name`` if it names ``owner``."""
        raise NotImplementedError

    def all_versions(self) -> list[Version]:
        raise NotImplementedError

    def get(self, work: str, path: str, number: int | None = None) -> Version:
        """Version ``number`` (default: latest) of ``(work, path)``.

        Raises ``FileNotFoundError`` when the path has no versions and
        ``UnknownVersion`` when it has, but not that one.
        """
        latest = self.latest(work, path)
        if latest is None:
            raise FileNotFoundError(not_found(f"{work}:{path}", hint="no stored versions"))
        if number is None or number == latest.number:
            return latest
        found = next((v for v in self.versions(work, path) if v.number == number), None)
        if found is None:
            raise UnknownVersion(work, path, number, latest.number)
        return found


def _row_to_version(row: tuple[Any, ...]) -> Version:
    work, path, number, manifest, created, files, size = row
    when = datetime.fromtimestamp(created, tz=timezone.utc)
    return Version(work, path, number, manifest, when, files, size)


_COLUMNS = "work, path, number, manifest, created, files, bytes"
_CREATE_META = 'CREATE TABLE IF NOT EXISTS "meta" ("key" TEXT PRIMARY KEY, "value" TEXT)'
_CREATE_VERSIONS = (
    'CREATE TABLE IF NOT EXISTS "versions" ("work" TEXT NOT NULL, "path" TEXT NOT NULL, '
    '"number" INTEGER NOT NULL, "manifest" TEXT NOT NULL, "created" REAL NOT NULL, '
    '"files" INTEGER NOT NULL, "bytes" INTEGER NOT NULL, PRIMARY KEY ("work", "path", "number"))'
)
_CREATE_CLAIMS = 'CREATE TABLE IF NOT EXISTS "claims" ("name" TEXT PRIMARY KEY, "owner" TEXT)'


class SQLiteCatalog(Catalog):
    """The catalog in one SQLite file, safe for many processes on one machine.

    >>> import tempfile, os
    >>> cat = SQLiteCatalog(os.path.join(tempfile.mkdtemp(), "catalog.db"))
    >>> cat.versions("root.train", "ckpt")
    []
    """

    def __init__(self, filename: str, readonly: bool = False, holds_objects: bool = False) -> None:
        """``readonly``: open for reading only, never writing (a read-only store works).

        ``holds_objects``: the store already holds objects, so a catalog without
        tables is damage (a lost or truncated catalog), not a new store.
        """
        self.filename = filename
        self.readonly = readonly
        self.holds_objects = holds_objects
        self._local = threading.local()
        self.store_id = self._open_readonly() if readonly else self._setup()

    def _connect_readonly(self) -> sqlite3.Connection:
        """A connection that never writes the store.

        With no ``-wal`` file no writer is mid-way and everything is in the main
        file: ``immutable`` reads it without creating any file (``mode=ro`` would
        create the WAL index). With one, ``mode=ro`` reads through the WAL (a
        writer is active), falling back to ``immutable`` where even that cannot
        be opened (a read-only folder, a read-only mount).
        """
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.filename))
        if not os.path.exists(self.filename + "-wal"):
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def _open_readonly(self) -> str:
        try:
            meta = self._meta()
            tables = self._tables()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, "is damaged or not a catalog") from None
        if not meta or "store_id" not in meta or "versions" not in tables:
            raise StoreFormatError(
                f"{self.filename} is empty or not a cas catalog: the store's catalog is "
                "damaged or missing (run on a copy made before the damage)"
            )
        self._check_format(meta)
        return meta["store_id"]

    def _tables(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        return {name for (name,) in rows}

    @property
    def conn(self) -> sqlite3.Connection:
        # One connection per process and thread: SQLite connections must not cross a fork.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            if self.readonly:
                conn = self._connect_readonly()
                self._local.conn, self._local.pid = conn, os.getpid()
                return conn
            conn = sqlite3.connect(
                self.filename, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _setup(self) -> str:
        try:
            conn = self.conn
            # A newer format is refused before anything (journal mode, tables) is written to it.
            self._check_format(self._meta())
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = self._tables()
                if "meta" not in tables and (tables or self.holds_objects):
                    what = "holds other tables" if tables else "is empty"
                    raise StoreFormatError(
                        f"{self.filename} {what}, not a cas catalog, beside a store that holds "
                        "objects: the catalog is damaged or lost (not an empty store)"
                    )
                # The schema sqlite-utils used to create, spelled out: importing sqlite-utils
                # cost every command ~0.1 s of start-up for these statements.
                conn.execute(_CREATE_META)
                conn.execute(_CREATE_VERSIONS)
                conn.execute(_CREATE_CLAIMS)
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('format', ?), ('store_id', ?)",
                    (str(FORMAT), uuid.uuid4().hex),
                )
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'format' AND CAST(value AS INTEGER) < ?",
                    (str(FORMAT), FORMAT),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            meta = self._meta()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, "is damaged or not a catalog") from None
        self._check_format(meta)
        return meta["store_id"]

    def _failure(self, exc: sqlite3.DatabaseError, damaged: str = "is damaged") -> Exception:
        """The error to raise for a failed SQLite call: only real damage is a format error.

        A full disk, a read-only file or a lock held too long say nothing about the
        catalog's health; they become ``OSError``/``TimeoutError`` naming the file.
        """
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        text = str(exc).lower()
        if code == _SQLITE_FULL or "disk is full" in text:
            return OSError(errno.ENOSPC, f"no space for the catalog ({exc})", self.filename)
        if code in (_SQLITE_PERM, _SQLITE_READONLY) or "readonly" in text:
            return PermissionError(errno.EACCES, f"cannot write the catalog ({exc})", self.filename)
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
            return TimeoutError(
                f"{self.filename} stayed locked by another writer for "
                f"{BUSY_TIMEOUT_MS // 1000} s ({exc})"
            )
        if code in (_SQLITE_IOERR, _SQLITE_CANTOPEN) or "unable to open" in text:
            return OSError(errno.EIO, f"cannot read or write the catalog ({exc})", self.filename)
        return StoreFormatError(f"{self.filename} {damaged}: {exc}")

    def _meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict; ``{}`` for a new, empty database."""
        conn = self.conn
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchall():
            return {}
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def _check_format(self, meta: dict[str, str]) -> None:
        try:
            found = int(meta.get("format", "0"))
        except ValueError:
            raise StoreFormatError(
                f"{self.filename} has an unreadable format marker {meta.get('format')!r}"
            ) from None
        if found > FORMAT:
            raise StoreFormatError(
                f"{self.filename} uses catalog format {found}, newer than this cas_storage "
                f"understands ({FORMAT}); upgrade cas_storage to read it"
            )

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc) from None

    def works(self) -> list[str]:
        return [w for (w,) in self._query("SELECT DISTINCT work FROM versions ORDER BY work")]

    def paths(self, work: str) -> list[str]:
        rows = self._query("SELECT DISTINCT path FROM versions WHERE work=? ORDER BY path", (work,))
        return [p for (p,) in rows]

    def versions(self, work: str, path: str) -> list[Version]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM versions WHERE work=? AND path=? ORDER BY number", (work, path)
        )
        return [_row_to_version(r) for r in rows]

    def latest(self, work: str, path: str) -> Version | None:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM versions WHERE work=? AND path=? ORDER BY number DESC LIMIT 1",
            (work, path),
        )
        return _row_to_version(rows[0]) if rows else None

    def all_versions(self) -> list[Version]:
        rows = self._query(f"SELECT {_COLUMNS} FROM versions ORDER BY work, path, number")
        return [_row_to_version(r) for r in rows]

    def create(self, version: Version) -> None:
        v = version
        try:
            self.conn.execute(
                f"INSERT INTO versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (v.work, v.path, v.number, v.manifest, v.created.timestamp(), v.files, v.bytes),
            )
        except sqlite3.IntegrityError:
            raise VersionExists(v.work, v.path, v.number) from None
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc) from None

    def delete(self, version: Version) -> None:
        self._query(
            "DELETE FROM versions WHERE work=? AND path=? AND number=? AND manifest=?",
            (version.work, version.path, version.number, version.manifest),
        )

    def claim(self, name: str, owner: str) -> tuple[str, bool]:
        try:
            cursor = self.conn.execute(
                "INSERT OR IGNORE INTO claims(name, owner) VALUES (?, ?)", (name, owner)
            )
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc) from None
        rows = self._query("SELECT owner FROM claims WHERE name=?", (name,))
        holder = rows[0][0] if rows else owner
        return holder, cursor.rowcount == 1

    def release(self, name: str, owner: str) -> None:
        self._query("DELETE FROM claims WHERE name=? AND owner=?", (name, owner))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
