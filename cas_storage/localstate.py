"""This machine's knowledge of its own files, kept beside them, not in the store.

* The **stat cache** maps a file's absolute path and ``stat`` identity (device,
  inode, size, mtime_ns, ctime_ns) to its content digest and chunk list, so a
  file that has not changed is never read again. It is kept **per tree** (the
  folder or file a snapshot or checkout was of): one compact record of every
  file in it, loaded in one read and written whole, only when something changed.
* **Checkout records** say which manifest each local checkout was last brought
  to, so the next checkout can swap manifests instead of copying everything.
* **Folder stamps** say which manifest a folder held when this machine last
  snapshotted it or checked it out, with every folder's identity then, so the next
  snapshot or checkout of an unchanged folder needs no walk (``FolderStamp``).

A store on S3 is shared by many machines, each with its own files, so none of
this belongs in the store. One SQLite file per machine (or per work) holds it.

Every record vouches for itself: it is believed only for a file whose stat is the
one recorded (and was older than the racy window then). So records of another
tree, or old ones, can cost a re-read but never give a wrong answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import struct
import threading
import time
import warnings
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from .hashing import DIGEST_LENGTH, digest_bytes
from .tree import paused_gc

if TYPE_CHECKING:
    from .manifest import Entry

BUSY_TIMEOUT_MS = 60_000
#: As bytes whatever was stored: a damaged body stored as text must not fail the query.
_TREE_COLUMNS = "root, CAST(body AS BLOB)"
_CHECKOUT_COLUMNS = "dest, store_id, work, path, number, manifest"
#: A file modified within this window of being recorded is not trusted later
#: (unless its ctime is past its mtime, see ``Known.matches``): another write in
#: the same timestamp tick would leave its stat unchanged.
RACY_NS = 10_000_000
#: The layout of a tree's record (``_encode``); any other is simply not known.
TREE_FORMAT = b"cas-stat-tree-1\n"
#: Array type codes of the integer columns: dev, ino, size unsigned; times signed.
_INT_COLUMNS = "QQQqqq"
_COUNTS = struct.Struct("<QQQ")  # records, bytes of paths, bytes of chunk lists


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
        """True when ``st`` is the very file this record describes, unchanged since.

        A write in the same timestamp tick as the recorded one would leave the stat
        as recorded, so the record is believed only when that tick was over before
        it was taken: when the recorded mtime is older than the racy window, or older
        than the recorded ctime. Every write sets both to the same tick, so a ctime
        past the mtime means a change of metadata alone came later (the rename of a
        checkout's staged file, a chmod), and any write after the record would move
        the mtime to at least that ctime: no write can hide in the mtime's tick.
        """
        return self.describes(st) and past_racy_window(
            self.mtime_ns, self.ctime_ns, self.recorded_ns
        )

    def describes(self, st: os.stat_result) -> bool:
        """Same file and stat as recorded. Without ``matches``' racy-window check, so
        only good as a hint for content that is verified when used."""
        return _same_file(self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns, st)


def identity(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    """What ``KnownFiles.identities`` compares of a file's stat: its mode (type and
    permissions), then ``_same_file``'s device, inode, size, mtime and ctime."""
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _same_file(
    dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int, st: os.stat_result
) -> bool:
    """``Known.describes``' rule: ``st`` is of the recorded file, with the recorded stat."""
    return (
        ino == st.st_ino
        and size == st.st_size
        and mtime_ns == st.st_mtime_ns
        and ctime_ns == st.st_ctime_ns
        and dev == st.st_dev
    )


def past_racy_window(mtime_ns: int, ctime_ns: int, recorded_ns: int) -> bool:
    """``Known.matches``' rule for the record's own times (see there)."""
    return mtime_ns < ctime_ns or mtime_ns < recorded_ns - RACY_NS


def known_from_stat(
    st: os.stat_result, digest: str, chunks: tuple[tuple[str, int], ...] = ()
) -> Known:
    """A record of ``st``; ``record_tree`` stamps it with the time it is stored."""
    return Known(
        st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, 0, digest, chunks
    )


class FolderStamp(NamedTuple):
    """What a snapshot or checkout of the folder ``root`` saw, for telling the next one
    of the same kind that nothing changed without a walk (``stamps.held_as_stamped``).

    ``manifest`` is the folder's manifest, taken with the stat-cache record whose digest
    is ``tree`` (it holds exactly ``files`` files: the manifest's); ``folders`` is the
    ``identity`` of every folder in it (``""``: ``root`` itself) as ``lstat`` gave it
    after ``walked_ns``. A name added, removed or renamed in a folder moves its mtime, a
    chmod its ctime: folders as stamped and files as recorded are the manifest's tree.
    ``by`` is what made it, ``"snapshot"`` or ``"checkout"``: each trusts only its own
    kind, since they differ at the edges (a snapshot drops set-user-ID bits, which a
    checkout would clear).
    """

    tree: str
    manifest: str
    files: int
    walked_ns: int
    folders: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...]
    by: str = "snapshot"


class KnownFiles(Mapping[str, Known]):
    """What the stat cache knows of the files of one tree, by absolute path.

    Held in columns, as loaded: a ``Known`` is built only for a file looked up,
    so loading 100,000 records makes a few dozen objects, not 100,000 tuples.
    ``root`` is the tree whose own record this is, exactly (``None`` when merged
    from other trees' records, or empty): saving it unchanged can then be skipped.
    ``record`` is the digest of that stored record (``None`` when not loaded from one):
    a ``FolderStamp`` names the record it was taken with.
    """

    def __init__(
        self,
        paths: Sequence[str],
        ints: Sequence[Sequence[int]],
        digests: str,
        chunks: Mapping[int, Sequence[Sequence[Any]]],
        root: str | None = None,
        record: str | None = None,
    ) -> None:
        self._index = dict(zip(paths, range(len(paths)), strict=True))
        self._ints = ints
        self._digests = digests
        self._chunks = chunks
        self.root = root
        self.record = record

    @classmethod
    def of(cls, records: Mapping[str, Known], root: str | None = None) -> KnownFiles:
        known = list(records.values())
        ints = _int_columns(known)
        chunks = {i: k.chunks for i, k in enumerate(known) if k.chunks}
        return cls(list(records), ints, "".join([k.digest for k in known]), chunks, root)

    def get(self, path: str, default: None = None) -> Known | None:  # type: ignore[override]
        i = self._index.get(path)
        if i is None:
            return None
        dev, ino, size, mtime_ns, ctime_ns, recorded_ns = self._ints
        start = i * DIGEST_LENGTH
        chunks = self._chunks.get(i) if self._chunks else None  # only large files have one
        return Known(
            dev[i],
            ino[i],
            size[i],
            mtime_ns[i],
            ctime_ns[i],
            recorded_ns[i],
            self._digests[start : start + DIGEST_LENGTH],
            tuple((d, n) for d, n in chunks) if chunks else (),
        )

    def matching_digest(self, path: str, st: os.stat_result) -> str | None:
        """The recorded digest of ``path`` if its record ``matches`` ``st``, else ``None``.

        ``get(path).matches(st)`` without building the record: an unchanged re-get
        asks this of every file, and 20,000 records built cost more than the check.
        """
        i = self._matching(path, st)
        if i is None:
            return None
        start = i * DIGEST_LENGTH
        return self._digests[start : start + DIGEST_LENGTH]

    def matching(
        self, path: str, st: os.stat_result
    ) -> tuple[str, tuple[tuple[str, int], ...]] | None:
        """``matching_digest`` with the recorded chunk list (``()`` for a file stored
        whole): what an unchanged re-put needs of every file, again without a ``Known``."""
        i = self._matching(path, st)
        if i is None:
            return None
        start = i * DIGEST_LENGTH
        chunks = self._chunks.get(i) if self._chunks else None  # only large files have one
        return (
            self._digests[start : start + DIGEST_LENGTH],
            tuple((d, n) for d, n in chunks) if chunks else (),
        )

    def all_match(self) -> bool:
        """Whether every file recorded here ``matches`` its record now: one ``lstat``
        each, and false at the first that does not (or is gone).

        ``matching_digest(path, os.lstat(path))`` for every path, as one loop over the
        columns: the unchanged re-get and re-put ask it of every file of a stamped tree,
        and the calls per file cost more than its ``lstat``.
        """
        dev, ino, size, mtime_ns, ctime_ns, recorded_ns = self._ints
        if not all(map(past_racy_window, mtime_ns, ctime_ns, recorded_ns)):
            return False
        wants = list(zip(ino, size, mtime_ns, ctime_ns, dev, strict=True))  # _same_file's
        lstat = os.lstat
        try:
            for path, i in self._index.items():
                st = lstat(path)
                if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev) != wants[i]:
                    return False
        except OSError:
            return False
        return True

    def _matching(self, path: str, st: os.stat_result) -> int | None:
        """The row of ``path`` if its record ``matches`` ``st``, checked in the columns."""
        i = self._index.get(path)
        if i is None:
            return None
        dev, ino, size, mtime_ns, ctime_ns, recorded_ns = self._ints
        mtime, ctime = mtime_ns[i], ctime_ns[i]
        if not (
            _same_file(dev[i], ino[i], size[i], mtime, ctime, st)
            and past_racy_window(mtime, ctime, recorded_ns[i])
        ):
            return None
        return i

    def identities(
        self, root: str, files: Iterable[Entry]
    ) -> dict[str, tuple[int, int, int, int, int, int]] | None:
        """``{entry.path: identity}`` for the ``files`` of a tree at ``root``: the
        ``identity`` of the stat each file must have for its record to vouch that it
        holds the entry's content with the entry's mode. ``None`` when any record is
        missing, names another digest, or could hide a write (``Known.matches``).

        For a check of a whole tree against its record by one tuple comparison per
        file: ``identity(st) == want`` is ``matching_digest(path, st) == entry.digest``
        and the entry's mode, at a third of the cost.
        """
        index, digests = self._index, self._digests
        dev, ino, size, mtime_ns, ctime_ns, recorded_ns = self._ints
        prefix = root.rstrip("/") + "/"
        found = {}
        for entry in files:
            i = index.get(prefix + entry.path)
            if i is None:
                return None
            start = i * DIGEST_LENGTH
            mtime, ctime = mtime_ns[i], ctime_ns[i]
            if digests[start : start + DIGEST_LENGTH] != entry.digest or not past_racy_window(
                mtime, ctime, recorded_ns[i]
            ):
                return None
            found[entry.path] = (stat.S_IFREG | entry.mode, dev[i], ino[i], size[i], mtime, ctime)
        return found

    def __getitem__(self, path: str) -> Known:
        known = self.get(path)
        if known is None:
            raise KeyError(path)
        return known

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, path: object) -> bool:
        return path in self._index


NOTHING_KNOWN = KnownFiles([], [[] for _ in _INT_COLUMNS], "", {})


class LocalState:
    """The stat cache and checkout records in one SQLite file.

    >>> import tempfile, os
    >>> state = LocalState(os.path.join(tempfile.mkdtemp(), "state.db"))
    >>> len(state.under("/nowhere"))
    0
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
        conn.execute("CREATE TABLE IF NOT EXISTS trees (root TEXT PRIMARY KEY, body BLOB)")
        conn.execute("CREATE TABLE IF NOT EXISTS stamps (root TEXT PRIMARY KEY, body TEXT)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS checkouts (dest TEXT PRIMARY KEY, store_id TEXT, "
            "work TEXT, path TEXT, number INTEGER, manifest TEXT)"
        )
        # Tables of another layout (an old version, another program) fail here, not later.
        conn.execute(f"SELECT {_TREE_COLUMNS} FROM trees LIMIT 1").fetchall()
        conn.execute(f"SELECT {_CHECKOUT_COLUMNS} FROM checkouts LIMIT 1").fetchall()
        conn.execute("SELECT root, body FROM stamps LIMIT 1").fetchall()
        # The per-file rows of the layout before per-tree records: superseded, and
        # only a cache, so dropped rather than converted (one re-read of each file).
        conn.execute("DROP TABLE IF EXISTS stat_cache")

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
    def under(self, root: str) -> KnownFiles:
        """Every cached file at or below absolute path ``root``, in one query.

        Usually one record: ``root``'s own. Records of trees below ``root`` (newer
        than its own, which replaced them when written) are merged over it; those of
        the trees ``root`` lies in are used only while ``root`` has none of its own.
        """
        root = root.rstrip("/") or "/"
        if not _encodable(root):
            return NOTHING_KNOWN  # nothing below a path that is not UTF-8 was ever cached
        prefix = root if root.endswith("/") else root + "/"
        above = _ancestors(root)
        query = f"SELECT {_TREE_COLUMNS} FROM trees WHERE root = ? OR (root > ? AND root < ?)"
        if above:
            query += f" OR root IN ({','.join('?' * len(above))})"
        try:
            # '0' sorts right after '/': (prefix, prefix[:-1] + "0") holds all below it.
            rows = self.conn.execute(query, (root, prefix, prefix[:-1] + "0", *above)).fetchall()
        except sqlite3.DatabaseError as exc:
            self._guard(exc)
            return NOTHING_KNOWN
        with paused_gc():  # thousands of strings, none of them in a cycle
            trees = {
                tree: files
                for tree, body in rows
                if isinstance(tree, str) and (files := _decode(body, tree)) is not None
            }
            own = trees.pop(root, None)
            if own is not None:  # the trees above hold older records than its own
                trees = {tree: files for tree, files in trees.items() if len(tree) > len(root)}
                if not trees:
                    return own
            elif not trees:
                return NOTHING_KNOWN
            merged: dict[str, Known] = dict(own.items()) if own is not None else {}
            for tree in sorted(trees, key=len):  # the nearest tree's record wins
                for path, known in trees[tree].items():
                    if path == root or path.startswith(prefix):
                        merged[path] = known
            return KnownFiles.of(merged)

    def record_tree(
        self, root: str, known: KnownFiles, kept: Iterable[str], learned: Mapping[str, Known]
    ) -> str | None:
        """Make the tree at ``root`` known as: the ``kept`` files of ``known`` (still as
        recorded) and the ``learned`` ones (recorded now). Records of other files in it
        go; records of trees below ``root`` are replaced by this one. Returns the digest
        of ``root``'s record as now stored (``None`` if it could not be stored).

        Nothing is written when nothing changed: ``known`` is ``root``'s own record
        and every file in it was kept.
        """
        root = root.rstrip("/") or "/"
        kept = kept if isinstance(kept, list) else list(kept)
        if not learned and known.root == root and len(kept) == len(known):
            return known.record
        if not _encodable(root):
            return None  # a path that is not UTF-8 cannot be a key: simply not cached
        # Stamped now, after every file was written: the racy window is measured from here.
        now = time.time_ns()
        records = {path: known[path] for path in kept}
        records.update(learned)  # their recorded_ns is 0 until _encode stamps them
        body = _encode(records, now)
        prefix = root if root.endswith("/") else root + "/"
        # The store is already written when the cache is updated: a cache that cannot be
        # written must not turn a finished snapshot or checkout into an error.
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO trees (root, body) VALUES (?, ?)", (root, body)
                )
                conn.execute(
                    "DELETE FROM trees WHERE root > ? AND root < ?", (prefix, prefix[:-1] + "0")
                )
        except sqlite3.DatabaseError as exc:
            self._guard(exc)
            return None
        return _record_digest(body)

    # -- folder stamps ----------------------------------------------------
    def stamp_of(self, root: str) -> FolderStamp | None:
        """The stamp the last snapshot or checkout of folder ``root`` left, if any and
        readable."""
        if not _encodable(root):
            return None
        try:
            row = self.conn.execute("SELECT body FROM stamps WHERE root = ?", (root,)).fetchone()
        except sqlite3.DatabaseError as exc:
            self._guard(exc)
            return None
        if row is None:
            return None
        try:
            raw = json.loads(row[0])
            folders = tuple((rel, tuple(ident)) for rel, ident in raw["folders"])
            stamp = FolderStamp(
                raw["tree"],
                raw["manifest"],
                raw["files"],
                raw["walked_ns"],
                folders,
                raw.get("by", "snapshot"),  # stamps from before checkouts made them
            )
        except (TypeError, ValueError, KeyError):
            return None  # none, or not what record_stamp wrote: simply not known
        return stamp if all(len(ident) == 6 for _, ident in folders) else None

    def record_stamp(self, root: str, stamp: FolderStamp | None) -> None:
        """Keep ``stamp`` as ``root``'s; ``None`` forgets the one it had."""
        if stamp is not None and not all(_encodable(rel) for rel, _ in stamp.folders):
            stamp = None
        if not _encodable(root):
            return
        try:
            with self._transaction() as conn:
                if stamp is None:
                    conn.execute("DELETE FROM stamps WHERE root = ?", (root,))
                else:
                    body = json.dumps(stamp._asdict(), separators=(",", ":"))
                    conn.execute(
                        "INSERT OR REPLACE INTO stamps (root, body) VALUES (?, ?)", (root, body)
                    )
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

    def checked_out(self, manifest: str) -> bool:
        """Whether this machine brought some destination to ``manifest``: it read and
        validated that manifest then (``checkout.load_manifest``)."""
        try:
            row = self.conn.execute(
                "SELECT 1 FROM checkouts WHERE manifest = ? LIMIT 1", (manifest,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._guard(exc)
            return False
        return row is not None

    def record_checkout(
        self, dest: str, store_id: str, work: str, path: str, number: int, manifest: str
    ) -> None:
        row = (dest, store_id, work, path, number, manifest)
        if not all(_encodable(v) for v in row if isinstance(v, str)):
            return
        try:
            with self._transaction() as conn:
                conn.execute(
                    f"INSERT OR REPLACE INTO checkouts ({_CHECKOUT_COLUMNS}) VALUES (?,?,?,?,?,?)",
                    row,
                )
        except sqlite3.DatabaseError as exc:
            self._guard(exc)

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


# -- a tree's record: one blob, checked whole -------------------------------------
# TREE_FORMAT, the digest of the rest, then: the counts (_COUNTS); the integer
# columns (_INT_COLUMNS, native byte order: the file never leaves this machine); the
# digests, 32 characters each; the paths, UTF-8, NUL-separated (no path holds a NUL);
# the chunk lists of the files that have them, as JSON {"record number": [[d, n], ...]}.
# One digest over it all stands in for checking 100,000 records one by one: a record
# we wrote is well-formed, and anything damaged since fails the digest.
def _encode(records: Mapping[str, Known], now: int) -> bytes:
    """The blob of ``records``; those not yet recorded (``recorded_ns`` 0, as
    ``known_from_stat`` makes them) are stamped ``now``."""
    try:
        return _pack(records, now)
    except (OverflowError, UnicodeEncodeError, ValueError):  # a record that does not fit
        return _pack({p: k for p, k in records.items() if _storable(p, k)}, now)


def _pack(records: Mapping[str, Known], now: int) -> bytes:
    known = list(records.values())
    columns = b"".join(
        array(code, column).tobytes()
        for code, column in zip(_INT_COLUMNS, _int_columns(known, now), strict=True)
    )
    digests = "".join([k.digest for k in known]).encode("ascii")
    if len(digests) != len(known) * DIGEST_LENGTH:
        raise ValueError("a digest of another length")
    paths = "\0".join(records).encode("utf-8")
    chunks = json.dumps({i: k.chunks for i, k in enumerate(known) if k.chunks}).encode()
    payload = b"".join(
        [_COUNTS.pack(len(known), len(paths), len(chunks)), columns, digests, paths, chunks]
    )
    return TREE_FORMAT + digest_bytes(payload).encode("ascii") + payload


def _record_digest(body: bytes) -> str:
    """The digest a record carries after ``TREE_FORMAT``: of the rest, and its name."""
    return body[len(TREE_FORMAT) : len(TREE_FORMAT) + DIGEST_LENGTH].decode("ascii", "replace")


def _decode(body: object, root: str) -> KnownFiles | None:
    """The records in ``body``, or ``None`` when it is not exactly what ``_encode`` wrote."""
    try:
        return _unpack(body, root)
    except (ValueError, struct.error):
        return None


def _unpack(body: object, root: str) -> KnownFiles | None:
    head = len(TREE_FORMAT)
    if not isinstance(body, bytes) or not body.startswith(TREE_FORMAT):
        return None
    payload = memoryview(body)[head + DIGEST_LENGTH :]
    if len(payload) < _COUNTS.size or _record_digest(body) != digest_bytes(payload):
        return None
    count, paths_size, chunks_size = _COUNTS.unpack_from(payload)
    at = _COUNTS.size
    ints = []
    for code in _INT_COLUMNS:
        column = array(code)
        column.frombytes(payload[at : at + count * column.itemsize])
        at += count * column.itemsize
        if len(column) != count:
            return None
        ints.append(column)
    digests = bytes(payload[at : at + count * DIGEST_LENGTH]).decode("ascii")
    at += count * DIGEST_LENGTH
    paths = bytes(payload[at : at + paths_size]).decode("utf-8").split("\0") if count else []
    at += paths_size
    chunks = {int(i): c for i, c in json.loads(bytes(payload[at : at + chunks_size])).items()}
    if at + chunks_size != len(payload) or len(paths) != count:
        return None
    return KnownFiles(paths, ints, digests, chunks, root, _record_digest(body))


def _int_columns(known: Sequence[Known], now: int = 0) -> list[Sequence[int]]:
    """The integer fields of ``known``, column by column, in ``_INT_COLUMNS`` order;
    a ``recorded_ns`` of 0 (not yet recorded) becomes ``now``. Stamped here rather
    than by a new tuple per record: 20,000 ``_replace`` calls cost as much as the
    encoding."""
    if not known:
        return [[] for _ in _INT_COLUMNS]
    rows = [(k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns, k.recorded_ns or now) for k in known]
    return list(zip(*rows, strict=True))


def _storable(path: str, known: Known) -> bool:
    """Whether a record fits the layout (a name that is not UTF-8 is simply not cached)."""
    unsigned = known.dev, known.ino, known.size
    signed = known.mtime_ns, known.ctime_ns, known.recorded_ns
    return (
        _encodable(path)
        and len(known.digest) == DIGEST_LENGTH
        and known.digest.isascii()
        and all(0 <= n < 1 << 64 for n in unsigned)
        and all(-(1 << 63) <= n < 1 << 63 for n in signed)
    )


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a/b", "/a", "/"]``."""
    out = []
    while path != "/":
        path = os.path.dirname(path)
        out.append(path)
    return out


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
