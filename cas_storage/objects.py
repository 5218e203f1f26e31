"""The object database: immutable byte strings stored under their digest.

``ObjectStore`` works over any fsspec filesystem (``memory://``, S3, ...).
``LocalObjects`` is the same contract for a local folder, with plain ``os``
calls on the hot paths and atomic writes (temp file in the same folder, then
``os.replace``) so a reader never sees half an object.

Layout, relative to the store root: ``objects/ab/cdef...`` — fanned out by the
first two hex digits of the digest.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, cast

from .errors import CorruptObject, MissingObject
from .hashing import digest_bytes, is_digest

if TYPE_CHECKING:
    from concurrent.futures import Future

    import fsspec


def _remote() -> ModuleType:
    """The fsspec helpers, imported on first use: they import asyncio (~50 ms), which
    no command on a local store needs at start-up."""
    from . import remote

    return remote


TEMP_MARK = ".tmp-"
#: Object temp files older than this belong to a dead writer (no write takes this long).
STALE_TEMP_SECONDS = 3600.0


def _check(digest: str) -> None:
    if not is_digest(digest):
        raise ValueError(f"not an object digest: {digest!r}")


class ObjectStore:
    """Content-addressed objects in ``root/objects`` of an fsspec filesystem.

    >>> import fsspec
    >>> objects = ObjectStore(fsspec.filesystem("memory"), "/doc-example")
    >>> digest = objects.put(b"hello")
    >>> objects.read(digest)
    b'hello'
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.dir = posixpath.join(self.root, "objects")

    def path(self, digest: str) -> str:
        """Where the object lives (does not check that it exists)."""
        _check(digest)
        return f"{self.dir}/{digest[:2]}/{digest[2:]}"  # posixpath.join, 3x faster

    def has(self, digest: str) -> bool:
        return cast(bool, _remote().exists(self.fs, self.path(digest)))

    def missing(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the store does not hold: one batch of listings on S3."""
        where = {self.path(d): d for d in set(digests)}
        return {where[p] for p in _remote().absent(self.fs, self.dir, where)}

    def touch(self, digest: str) -> bool:
        """Mark a present object as just used (gc spares recent objects); False if absent.

        Object stores without a cheap touch rely on gc's lease protocol alone.
        """
        return self.has(digest)

    def mtime(self, digest: str) -> float:
        """When the object was last written or touched (seconds since the epoch)."""
        try:
            return float(self.fs.modified(self.path(digest)).timestamp())
        except FileNotFoundError:
            raise MissingObject(digest) from None

    def size(self, digest: str) -> int:
        try:
            return int(self.fs.size(self.path(digest)))
        except FileNotFoundError:
            raise MissingObject(digest) from None

    def put(self, data: bytes | bytearray | memoryview, digest: str | None = None) -> str:
        """Store ``data`` unless present; return its digest. Objects are never rewritten.

        One create-only write and no existence check first: an object already there
        refuses the write, which is success (same name, same bytes).
        """
        digest = digest or digest_bytes(data)
        _remote().put(self.fs, self.path(digest), bytes(data))
        return digest

    def read(self, digest: str, verify: bool = True, where: str = "") -> bytes:
        """The object's bytes; with ``verify``, raise ``CorruptObject`` on a mismatch."""
        try:
            data = cast(bytes, _remote().read(self.fs, self.path(digest)))
        except FileNotFoundError:
            raise MissingObject(digest, where) from None
        if verify and (got := digest_bytes(data)) != digest:
            raise CorruptObject(digest, got, where)
        return data

    def delete(self, digest: str) -> None:
        _remote().delete_many(self.fs, [self.path(digest)])

    def __iter__(self) -> Iterator[str]:
        """Every stored digest (order unspecified)."""
        return (digest for digest, _, _ in self.inventory())

    def inventory(self) -> Iterator[tuple[str, int, float]]:
        """``(digest, size, time written)`` of every stored object, from listings alone."""
        for entry in _remote().listing(self.fs, self.dir + "/"):
            fan, rest = entry.path.rsplit("/", 2)[-2:]
            if is_digest(fan + rest):
                yield fan + rest, entry.size, entry.modified or 0.0

    # -- batches: many objects at once ------------------------------------------
    def batch(self) -> contextlib.AbstractContextManager[ObjectStore]:
        """A store whose ``put`` runs in the background, many at once.

        Leaving the ``with`` block waits until every put is durable (and raises the
        first failure), so the write order holds: objects, then what references them.
        """
        return _BatchedPuts(self)

    def read_ahead(
        self, wanted: Iterable[tuple[str, int]]
    ) -> contextlib.AbstractContextManager[ObjectStore | ReadAhead]:
        """A reader (``read`` as here) that fetches ``wanted`` — ``(digest, size)`` in
        the order they will be read — ahead of the caller, a bounded number of bytes
        at a time. Leaving the ``with`` block stops the fetches."""
        return ReadAhead(self, list(wanted))

    # -- small mutable records beside the objects (locks) ----------------------
    # Names are relative to the store root (``locks/shared-....json``). Creating
    # one is create-only, so two writers can never both create the same name; a
    # record's time is the store's own clock (file mtime, S3 LastModified).
    def create_record(self, name: str, data: bytes) -> float:
        """Create record ``name`` holding ``data``; ``FileExistsError`` if it exists.

        Returns when the store says it was written (its clock).
        """
        return cast(
            float, _remote().create(self.fs, posixpath.join(self.root, name), data).timestamp()
        )

    def refresh_record(self, name: str, data: bytes) -> bool:
        """Renew record ``name``'s time (the holder is alive); ``False`` if it is gone."""
        return cast(
            bool, _remote().replace_existing(self.fs, posixpath.join(self.root, name), data)
        )

    def records(self, folder: str) -> dict[str, float]:
        """``{record name: time written, on the store's clock}`` of records in ``folder``."""
        out = {}
        for entry in _remote().listing(self.fs, posixpath.join(self.root, folder) + "/"):
            name = posixpath.join(folder, posixpath.basename(entry.path))
            out[name] = entry.modified or 0.0
        return out

    def read_record(self, name: str) -> bytes:
        return cast(bytes, _remote().read(self.fs, posixpath.join(self.root, name)))

    def delete_record(self, name: str) -> None:
        _remote().delete_many(self.fs, [posixpath.join(self.root, name)])

    def store_time(self) -> float:
        """Now, on the store's clock: the time the store gives a record written for it."""
        probe = f"locks/clock-{secrets.token_hex(8)}"
        try:
            return self.create_record(probe, b"")
        finally:
            self.delete_record(probe)


#: Bytes of objects in flight at once in a batch of puts or a read-ahead.
BATCH_BYTES = 64 * 2**20


class _Budget:
    """At most ``limit`` bytes taken at once (a single larger item is let through alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()

    def take(self, size: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size

    def give(self, size: int) -> None:
        with self.cond:
            self.used -= size
            self.cond.notify_all()


class _BatchedPuts(ObjectStore):
    """The same store, with ``put`` queued to a thread pool (see ``ObjectStore.batch``)."""

    def __init__(self, parent: ObjectStore) -> None:
        super().__init__(parent.fs, parent.root)
        from concurrent.futures import ThreadPoolExecutor  # imports logging: only when used

        self._pool = ThreadPoolExecutor(_remote().CONCURRENCY, thread_name_prefix="cas-put")
        self._budget = _Budget(BATCH_BYTES)
        self._queued: set[str] = set()
        self._pending: list[Future[None]] = []

    def put(self, data: bytes | bytearray | memoryview, digest: str | None = None) -> str:
        digest = digest or digest_bytes(data)
        if digest in self._queued:
            return digest
        self._raise_first_failure(done_only=True)
        body = bytes(data)  # a chunk's view is only valid until the next one is cut
        self._budget.take(len(body))
        self._queued.add(digest)
        self._pending.append(self._pool.submit(self._put, body, digest))
        return digest

    def _put(self, body: bytes, digest: str) -> None:
        try:
            _remote().put(self.fs, self.path(digest), body)
        finally:
            self._budget.give(len(body))

    def missing(self, digests: Iterable[str]) -> set[str]:
        self._raise_first_failure(done_only=False)  # what we wrote is there before we ask
        return super().missing(digests)

    def _raise_first_failure(self, done_only: bool) -> None:
        still = []
        for future in self._pending:
            if done_only and not future.done():
                still.append(future)
            else:
                future.result()
        self._pending = still

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._raise_first_failure(done_only=False)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class ReadAhead:
    """Objects read in a known order, fetched ahead within ``BATCH_BYTES``.

    ``read`` of the next wanted digest waits for its fetch; digests the caller
    skips are dropped from the window; anything not planned is read directly.
    Verification and the errors' wording happen in ``read``, as for
    ``ObjectStore.read``.
    """

    def __init__(self, objects: ObjectStore, wanted: list[tuple[str, int]]) -> None:
        self.objects = objects
        self._wanted = wanted
        self._budget = _Budget(BATCH_BYTES)
        from concurrent.futures import ThreadPoolExecutor  # imports logging: only when used

        self._pool = ThreadPoolExecutor(_remote().CONCURRENCY, thread_name_prefix="cas-read")
        self._fetches: dict[int, Future[bytes | None]] = {}
        self._next = 0  # the next position to fetch
        self._done = 0  # positions before this one were read or skipped
        self._fill()

    def _fill(self) -> None:
        while self._next < len(self._wanted):
            digest, size = self._wanted[self._next]
            with self._budget.cond:
                if self._budget.used and self._budget.used + size > self._budget.limit:
                    return
                self._budget.used += size
            self._fetches[self._next] = self._pool.submit(self._fetch, digest)
            self._next += 1

    def _fetch(self, digest: str) -> bytes | None:
        try:
            return self.objects.read(digest, verify=False)
        except FileNotFoundError:
            return None  # reported (with the reader's wording) when it is read

    def read(self, digest: str, verify: bool = True, where: str = "") -> bytes:
        position = next(
            (p for p in range(self._done, self._next) if self._wanted[p][0] == digest), None
        )
        if position is None:
            return self.objects.read(digest, verify, where)
        for skipped in range(self._done, position):
            self._release(skipped)
        data = self._fetches[position].result()
        self._release(position)
        self._done = position + 1
        self._fill()
        if data is None:
            raise MissingObject(digest, where)
        if verify and (got := digest_bytes(data)) != digest:
            raise CorruptObject(digest, got, where)
        return data

    def _release(self, position: int) -> None:
        future = self._fetches.pop(position, None)
        if future is not None:
            future.cancel()
            self._budget.give(self._wanted[position][1])

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class LocalObjects(ObjectStore):
    """``ObjectStore`` for a local folder: direct syscalls and atomic renames.

    ``fsync=True`` flushes each object to disk before it becomes visible, for
    stores that must survive power loss, not just process crashes.
    """

    def __init__(self, root: str, fsync: bool = False) -> None:
        # No fsspec filesystem up front: importing fsspec costs every command ~0.1 s of
        # start-up, and every method here uses plain ``os`` calls.
        self.root = os.path.abspath(root)
        self.dir = posixpath.join(self.root, "objects")
        self.fsync = fsync
        self._made: set[str] = set()

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The local filesystem as fsspec sees it, for code written against ``ObjectStore``."""
        import fsspec

        return fsspec.filesystem("file")

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def touch(self, digest: str) -> bool:
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def mtime(self, digest: str) -> float:
        try:
            return os.stat(self.path(digest)).st_mtime
        except FileNotFoundError:
            raise MissingObject(digest) from None

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise MissingObject(digest) from None

    def put(self, data: bytes | bytearray | memoryview, digest: str | None = None) -> str:
        digest = digest or digest_bytes(data)
        target = self.path(digest)
        try:
            # A present object of the wrong size is damaged: rewrite it rather than let
            # a new version reference it. (Same-size damage needs a re-hash: verify.)
            if os.stat(target).st_size == len(data):
                os.utime(target)  # in use again: gc's grace period starts afresh
                return digest
        except FileNotFoundError:
            pass
        folder = os.path.dirname(target)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        temp = f"{target}{TEMP_MARK}{secrets.token_hex(6)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            with open(fd, "wb", closefd=True) as out:
                out.write(data)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(exc, OSError):  # write() errors (ENOSPC) name no file: name it
                raise OSError(exc.errno, f"{exc.strerror} while storing an object", target) from exc
            raise
        return digest

    def read(self, digest: str, verify: bool = True, where: str = "") -> bytes:
        try:
            with open(self.path(digest), "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            raise MissingObject(digest, where) from None
        if verify and (got := digest_bytes(data)) != digest:
            raise CorruptObject(digest, got, where)
        return data

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def __iter__(self) -> Iterator[str]:
        if not os.path.isdir(self.dir):
            return
        for fan in os.scandir(self.dir):
            if not fan.is_dir():
                continue
            for entry in os.scandir(fan.path):
                if is_digest(fan.name + entry.name):
                    yield fan.name + entry.name

    def inventory(self) -> Iterator[tuple[str, int, float]]:
        for digest in self:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path(digest))
                yield digest, st.st_size, st.st_mtime

    def batch(self) -> contextlib.AbstractContextManager[ObjectStore]:
        return contextlib.nullcontext(self)  # local writes are quick one by one

    def read_ahead(
        self, wanted: Iterable[tuple[str, int]]
    ) -> contextlib.AbstractContextManager[ObjectStore | ReadAhead]:
        return contextlib.nullcontext(self)  # nothing to wait for: read() is direct

    # -- records: plain files; create-only through link(2), which never replaces
    def _record_path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def create_record(self, name: str, data: bytes) -> float:
        target = self._record_path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temp = f"{target}{TEMP_MARK}{secrets.token_hex(6)}"
        with open(temp, "xb") as out:
            out.write(data)
        try:
            os.link(temp, target)  # whole or not at all, and never over an existing one
        finally:
            os.unlink(temp)
        return os.stat(target).st_mtime

    def refresh_record(self, name: str, data: bytes) -> bool:
        try:
            os.utime(self._record_path(name))
        except FileNotFoundError:
            return False
        return True

    def records(self, folder: str) -> dict[str, float]:
        out = {}
        try:
            entries = list(os.scandir(self._record_path(folder)))
        except FileNotFoundError:
            return {}
        for entry in entries:
            if TEMP_MARK in entry.name:
                continue
            try:
                out[f"{folder}/{entry.name}"] = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
        return out

    def read_record(self, name: str) -> bytes:
        with open(self._record_path(name), "rb") as stream:
            return stream.read()

    def delete_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(name))

    def missing(self, digests: Iterable[str]) -> set[str]:
        return {d for d in set(digests) if not os.path.exists(self.path(d))}

    def remove_stale_temps(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp files of writers that died mid-write; return how many.

        Temp names are unique and never reused, so leftovers never block a writer;
        they only waste space. Files younger than ``older_than`` seconds may belong
        to a writer that is still running and are kept.
        """
        removed = 0
        cutoff = time.time() - older_than
        for path in self.temp_files():
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_mtime <= cutoff:
                    os.unlink(path)
                    removed += 1
        return removed

    def temp_files(self) -> Iterator[str]:
        """Leftovers of writers that died mid-write (safe to delete when old)."""
        folders = [os.path.join(self.root, "locks")]
        if os.path.isdir(self.dir):
            folders += [fan.path for fan in os.scandir(self.dir) if fan.is_dir()]
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    if TEMP_MARK in entry.name:
                        yield entry.path
