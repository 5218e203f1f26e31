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
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .errors import CorruptObject, MissingObject
from .hashing import digest_bytes, is_digest

if TYPE_CHECKING:
    import fsspec

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
        return self.fs.exists(self.path(digest))

    def missing(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the store does not hold (a batch existence check)."""
        return {d for d in set(digests) if not self.has(d)}

    def touch(self, digest: str) -> bool:
        """Mark a present object as just used (gc spares recent objects); False if absent.

        Object stores without a cheap touch rely on gc's grace period alone.
        """
        return self.has(digest)

    def mtime(self, digest: str) -> float:
        """When the object was last written or touched (seconds since the epoch)."""
        try:
            return self.fs.modified(self.path(digest)).timestamp()
        except FileNotFoundError:
            raise MissingObject(digest) from None

    def size(self, digest: str) -> int:
        try:
            return self.fs.size(self.path(digest))
        except FileNotFoundError:
            raise MissingObject(digest) from None

    def put(self, data: bytes | bytearray | memoryview, digest: str | None = None) -> str:
        """Store ``data`` unless present; return its digest. Objects are never rewritten."""
        digest = digest or digest_bytes(data)
        target = self.path(digest)
        if not self.fs.exists(target):
            # Objects are written once; S3-like stores make the write itself atomic.
            self.fs.pipe_file(target, bytes(data))
        return digest

    def read(self, digest: str, verify: bool = True, where: str = "") -> bytes:
        """The object's bytes; with ``verify``, raise ``CorruptObject`` on a mismatch."""
        try:
            data = self.fs.cat_file(self.path(digest))
        except FileNotFoundError:
            raise MissingObject(digest, where) from None
        if verify and (got := digest_bytes(data)) != digest:
            raise CorruptObject(digest, got, where)
        return data

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(digest))

    def __iter__(self) -> Iterator[str]:
        """Every stored digest (order unspecified)."""
        if not self.fs.exists(self.dir):
            return
        for fan in self.fs.ls(self.dir, detail=False):
            prefix = posixpath.basename(fan.rstrip("/"))
            for name in self.fs.ls(fan, detail=False):
                rest = posixpath.basename(name)
                if is_digest(prefix + rest):
                    yield prefix + rest

    # -- small mutable records beside the objects (locks) ----------------------
    # Names are relative to the store root (``locks/shared-....json``). Creating
    # one is create-only, so two writers can never both create the same name; a
    # record's time is the store's own clock (file mtime, S3 LastModified).
    def create_record(self, name: str, data: bytes) -> None:
        """Create record ``name`` holding ``data``; ``FileExistsError`` if it exists."""
        with self.fs.open(posixpath.join(self.root, name), "xb") as out:
            out.write(data)

    def refresh_record(self, name: str, data: bytes) -> bool:
        """Renew record ``name``'s time (the holder is alive); ``False`` if it is gone."""
        location = posixpath.join(self.root, name)
        if not self.fs.exists(location):
            return False
        self.fs.pipe_file(location, data)
        return True

    def records(self, folder: str) -> dict[str, float]:
        """``{record name: time written, on the store's clock}`` of records in ``folder``."""
        location = posixpath.join(self.root, folder)
        try:
            found = self.fs.ls(location, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        out = {}
        for info in found:
            if info.get("type") == "directory":
                continue
            when = info.get("LastModified") or info.get("mtime") or info.get("created")
            if hasattr(when, "timestamp"):
                when = when.timestamp()
            out[posixpath.join(folder, posixpath.basename(info["name"]))] = float(when or 0.0)
        return out

    def read_record(self, name: str) -> bytes:
        return self.fs.cat_file(posixpath.join(self.root, name))

    def delete_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(posixpath.join(self.root, name))

    def store_time(self) -> float:
        """Now, on the store's clock: the time of a record written for the purpose."""
        probe = f"locks/clock-{secrets.token_hex(8)}"
        self.create_record(probe, b"")
        try:
            return self.records("locks")[probe]
        finally:
            self.delete_record(probe)


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

    @property  # type: ignore[override]
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

    # -- records: plain files; create-only through link(2), which never replaces
    def _record_path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def create_record(self, name: str, data: bytes) -> None:
        target = self._record_path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temp = f"{target}{TEMP_MARK}{secrets.token_hex(6)}"
        with open(temp, "xb") as out:
            out.write(data)
        try:
            os.link(temp, target)  # whole or not at all, and never over an existing one
        finally:
            os.unlink(temp)

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
