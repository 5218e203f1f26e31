"""The object database: immutable byte strings stored under their digest.

``ObjectStore`` works over any fsspec filesystem (``memory://``, S3, ...).
``LocalObjects`` is the same contract for a local folder, with plain ``os``
calls on the hot paths and atomic writes (temp file in the same folder, then
``os.replace``) so a reader never sees half an object.

Layout, relative to the store root: ``packs/<id>.pack`` + ``packs/<id>.idx``, the
objects a batch of writes stored (``packs.py``), and ``objects/ab/cdef...``, loose
objects (manifests, small batches, stores written before packs) fanned out by the
first two hex digits of the digest. Every read looks in the packs' index first,
then for a loose file, then reloads the index once (another process may have
written or repacked since).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple, cast

from . import packs
from .errors import CorruptObject, MissingObject
from .hashing import digest_bytes, is_digest
from .packs import Location, PackIndex, PackSink, PackWriter

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    import fsspec


def _remote() -> ModuleType:
    """The fsspec helpers, imported on first use: they import asyncio (~50 ms), which
    no command on a local store needs at start-up."""
    from . import remote

    return remote


TEMP_MARK = ".tmp-"
#: Object temp files older than this belong to a dead writer (no write takes this long).
STALE_TEMP_SECONDS = 3600.0
#: A pack file's write buffer. Small objects (a 4 KiB file) go out 32 to a ``write``
#: instead of one or two each: 20,000 of them took 0.035 s instead of 0.125 s. Chunks
#: are larger than this, and BufferedWriter hands those to the file without a copy.
PACK_WRITE_BUFFER = 128 * 1024


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

    #: Whether a batch uploads its finished packs on background threads.
    background_uploads = True

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.dir = posixpath.join(self.root, "objects")
        self._index = PackIndex()

    def path(self, digest: str) -> str:
        """Where the object lives as a loose file (does not check that it exists)."""
        _check(digest)
        return f"{self.dir}/{digest[:2]}/{digest[2:]}"  # posixpath.join, 3x faster

    # -- packs ----------------------------------------------------------------
    def refresh_packs(self) -> PackIndex:
        """The index of every pack, brought up to date from a fresh listing."""
        listed = {
            name[len(packs.FOLDER) + 1 : -len(packs.INDEX_SUFFIX)]: when
            for name, when in self.records(packs.FOLDER).items()
            if name.endswith(packs.INDEX_SUFFIX)
        }
        self._index.update(listed, self._load_indexes)
        return self._index

    def pack_index(self) -> PackIndex:
        """The index as last loaded (loaded now if never): for lookups that retry on a miss."""
        return self._index if self._index.loaded else self.refresh_packs()

    def _load_indexes(self, ids: list[str]) -> dict[str, bytes | Exception]:
        paths = {posixpath.join(self.root, packs.index_name(p)): p for p in ids}
        found = _remote().read_many(self.fs, list(paths))
        return {paths[path]: data for path, data in found.items()}

    def read_packed(self, where: Location) -> bytes:
        """The bytes at ``where`` (unverified); ``FileNotFoundError`` if the pack is gone."""
        return self.read_range(where.pack, where.offset, where.size)

    def read_range(self, pack: str, offset: int, size: int) -> bytes:
        path = posixpath.join(self.root, packs.pack_name(pack))
        return cast(bytes, _remote().read_range(self.fs, path, offset, size))

    def pack_sink(self, pack: str) -> PackSink:
        return _MemoryPack(self, pack)

    def put_loose_many(self, items: dict[str, bytes]) -> None:
        """Store ``{digest: data}`` as loose objects, many at once."""
        _remote().put_many(self.fs, {self.path(d): data for d, data in items.items()})

    def free(self, digests: Iterable[str]) -> None:
        """Delete these objects wherever they are (gc, under its exclusive lock).

        Loose files go; a pack holding any of them is rewritten without them.
        """
        doomed = set(digests)
        packs.repack(self, self.refresh_packs(), doomed)
        self._delete_loose(doomed)
        self.refresh_packs()

    def _delete_loose(self, digests: set[str]) -> None:
        _remote().delete_many(self.fs, [self.path(d) for d in digests])

    def remove_orphan_packs(self, older_than: float) -> int:
        """Delete packs without an index (a writer died between the two writes), if old."""
        found = self.records(packs.FOLDER)
        cutoff = self.store_time() - older_than
        removed = 0
        for name, when in found.items():
            index = name[: -len(packs.PACK_SUFFIX)] + packs.INDEX_SUFFIX
            if name.endswith(packs.PACK_SUFFIX) and when <= cutoff and index not in found:
                self.delete_record(name)
                removed += 1
        return removed

    def pack_problems(self) -> dict[str, str]:
        """Index records that could not be read, and why (``cas verify`` reports them)."""
        return dict(self.refresh_packs().damaged)

    def _find(self, digest: str) -> bytes | None:
        """The object's bytes from a pack or its loose file; ``None`` if it is in neither.

        A miss reloads the index once: another process may have packed it since we
        loaded the index, or gc may have moved it to a new pack.
        """
        index = self._index
        if not index.loaded:
            # Manifests are loose: a command that reads only manifests (ls, log, an
            # unchanged checkout) never pays for loading every index.
            with contextlib.suppress(FileNotFoundError):
                return self._read_loose(digest)
            where = self.refresh_packs().get(digest)
            try:
                return None if where is None else self.read_packed(where)
            except FileNotFoundError:
                return None
        for attempt in range(2):
            where = index.get(digest)
            try:
                return self.read_packed(where) if where is not None else self._read_loose(digest)
            except FileNotFoundError:
                if attempt == 0:
                    index = self.refresh_packs()
        return None

    def _read_loose(self, digest: str) -> bytes:
        return cast(bytes, _remote().read(self.fs, self.path(digest)))

    def _loose_exists(self, digest: str) -> bool:
        return cast(bool, _remote().exists(self.fs, self.path(digest)))

    def _loose_missing(self, digests: set[str]) -> set[str]:
        where = {self.path(d): d for d in digests}
        return {where[p] for p in _remote().absent(self.fs, self.dir, where)}

    def _loose_inventory(self) -> Iterator[tuple[str, int, float]]:
        for entry in _remote().listing(self.fs, self.dir + "/"):
            fan, rest = entry.path.rsplit("/", 2)[-2:]
            if is_digest(fan + rest):
                yield fan + rest, entry.size, entry.modified or 0.0

    # -- the object API -------------------------------------------------------
    def has(self, digest: str) -> bool:
        _check(digest)
        if digest in self.pack_index() or self._loose_exists(digest):
            return True
        return digest in self.refresh_packs()

    def missing(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the store does not hold: a fresh index, then listings."""
        wanted = set(digests)
        if not wanted:
            return set()
        index = self.refresh_packs()
        return self._loose_missing({d for d in wanted if d not in index})

    def touch(self, digest: str) -> bool:
        """Mark a present object as just used (gc spares recent objects); False if absent.

        Object stores without a cheap touch rely on gc's lease protocol alone.
        """
        return self.has(digest)

    def mtime(self, digest: str) -> float:
        """When the object was last written or touched (seconds since the epoch)."""
        for _, _, written in self.inventory_of({digest}):
            return written
        raise MissingObject(digest)

    def size(self, digest: str) -> int:
        for _, size, _ in self.inventory_of({digest}):
            return size
        raise MissingObject(digest)

    def inventory_of(self, digests: set[str]) -> Iterator[tuple[str, int, float]]:
        """``(digest, size, time written)`` of those of ``digests`` the store holds."""
        index, unknown = self.pack_index(), []
        for digest in digests:
            where = index.get(digest)
            if where is not None:
                yield digest, where.size, index.written(where.pack)
                continue
            try:
                yield (digest, *self._loose_stat(digest))
            except FileNotFoundError:
                unknown.append(digest)
        if unknown:  # packed since the index was loaded, perhaps
            index = self.refresh_packs()
            for digest in unknown:
                if (where := index.get(digest)) is not None:
                    yield digest, where.size, index.written(where.pack)

    def _loose_stat(self, digest: str) -> tuple[int, float]:
        path = self.path(digest)
        return int(self.fs.size(path)), float(self.fs.modified(path).timestamp())

    def put(
        self, data: bytes | bytearray | memoryview, digest: str | None = None, at: int | None = None
    ) -> str:
        """Store ``data`` unless present; return its digest. Objects are never rewritten.

        ``at``: where ``data`` begins in the large file it is part of, which a batch
        uses to place it in its pack (``packs.ALIGN``); a loose object needs no place.
        One create-only write and no existence check first: an object already there
        refuses the write, which is success (same name, same bytes).
        """
        digest = digest or digest_bytes(data)
        _remote().put(self.fs, self.path(digest), bytes(data))
        return digest

    def read(self, digest: str, verify: bool = True, where: str = "") -> bytes:
        """The object's bytes; with ``verify``, raise ``CorruptObject`` on a mismatch."""
        _check(digest)
        data = self._find(digest)
        if data is None:
            raise MissingObject(digest, where)
        if verify and (got := digest_bytes(data)) != digest:
            raise CorruptObject(digest, got, where)
        return data

    def delete(self, digest: str) -> None:
        """Delete the object (``free`` for many: a pack is rewritten once for all)."""
        self.free([digest])

    def __iter__(self) -> Iterator[str]:
        """Every stored digest (order unspecified)."""
        return (digest for digest, _, _ in self.inventory())

    def inventory(self) -> Iterator[tuple[str, int, float]]:
        """``(digest, size, time written)`` of every stored object, once each, from
        the packs' index and listings alone (a packed object has its pack's time)."""
        index = self.refresh_packs()
        for digest, where, written in index.objects():
            yield digest, where.size, written
        for digest, size, written in self._loose_inventory():
            if digest not in index:
                yield digest, size, written

    # -- batches: many objects at once ------------------------------------------
    def batch(self) -> contextlib.AbstractContextManager[ObjectStore]:
        """A view of the store whose ``put`` stores into packs (``packs.py``).

        Leaving the ``with`` block waits until every object is durable (and raises
        the first failure), so the write order holds: objects, then what references
        them. Objects the index names are not written again; the index is reloaded
        when the batch starts — under the caller's lease, so gc deletes none of them
        before the batch's version is recorded.
        """
        return cast("contextlib.AbstractContextManager[ObjectStore]", PackBatch(self))

    def read_ahead(
        self, wanted: Iterable[tuple[str, int]]
    ) -> contextlib.AbstractContextManager[ObjectStore | ReadAhead]:
        """A reader (``read`` as here) that fetches ``wanted`` — ``(digest, size)`` in
        the order they will be read — ahead of the caller, a bounded number of bytes
        at a time. Leaving the ``with`` block stops the fetches."""
        return ReadAhead(self, list(wanted), _remote().CONCURRENCY)

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


#: Neighbouring objects of one pack are fetched by one ranged read of at most this size.
RUN_BYTES = 4 * 2**20


class _Run(NamedTuple):
    """Wanted objects fetched by one read: neighbours in a pack, or one loose object."""

    pack: str | None
    start: int
    size: int
    first: int  # the first and last wanted positions it holds
    last: int


def _plan_runs(
    index: PackIndex, wanted: list[tuple[str, int]]
) -> tuple[list[_Run], list[int], list[tuple[int, int]]]:
    """Group ``wanted`` into reads: neighbours in a pack (or apart by the padding that
    aligns a file's chunks) share one read of at most ``RUN_BYTES``; anything else is
    a read of its own. Returns the runs, each position's run, and each position's
    (offset, size) in its run. The open run is kept in locals: building a tuple per
    object cost half as much as the reads of a 20,000-file checkout.
    """
    runs: list[_Run] = []
    run_of: list[int] = []
    slices: list[tuple[int, int]] = []
    pack: str | None = None  # the open run: pack, start, end and first position
    start = end = first = 0
    for position, (digest, size) in enumerate(wanted):
        where = index.get(digest)
        if where is not None and pack is not None and where.pack == pack:
            offset = where.offset
            if 0 <= offset - end < packs.ALIGN and offset + where.size - start <= RUN_BYTES:
                end = offset + where.size
                slices.append((offset - start, where.size))
                run_of.append(len(runs))
                continue
        if pack is not None:
            runs.append(_Run(pack, start, end - start, first, position - 1))
            pack = None
        if where is None:
            slices.append((0, size))
            run_of.append(len(runs))
            runs.append(_Run(None, 0, size, position, position))
            continue
        pack, start, end, first = where.pack, where.offset, where.offset + where.size, position
        slices.append((0, where.size))
        run_of.append(len(runs))
    if pack is not None:
        runs.append(_Run(pack, start, end - start, first, len(wanted) - 1))
    return runs, run_of, slices


class _WhenAsked:
    """A fetch made when its result is first asked for: a read-ahead without threads."""

    def __init__(self, fetch: Callable[[_Run], bytes | None], run: _Run) -> None:
        self._fetch, self._run = fetch, run
        self._data: bytes | None = None
        self._done = False

    def result(self) -> bytes | None:
        if not self._done:
            self._data, self._done = self._fetch(self._run), True
        return self._data

    def cancel(self) -> bool:
        return True  # never started: a skipped run costs nothing


class ReadAhead:
    """Objects read in a known order, fetched ahead within ``BATCH_BYTES``.

    Neighbouring objects of a pack are fetched by one ranged read (a few MiB), the
    rest one by one, ``concurrency`` reads at once on threads — or, with
    ``concurrency=0`` (a local store, where a read is quick but each costs a system
    call), each run in one read when its first object is asked for. ``read`` of the
    next wanted digest waits for its fetch; digests the caller skips are dropped
    from the window; anything not planned — or gone from its pack since (a repack)
    — is read directly. Verification and the errors' wording happen in ``read``,
    as for ``ObjectStore.read``.
    """

    def __init__(
        self, objects: ObjectStore, wanted: list[tuple[str, int]], concurrency: int
    ) -> None:
        self.objects = objects
        self._digests = [digest for digest, _ in wanted]
        index = objects.pack_index()
        if sum(1 for digest, _ in wanted if digest not in index) >= packs.PACK_MIN_OBJECTS:
            # So many objects unknown to the index are not all loose (fewer than
            # PACK_MIN_OBJECTS per batch are): packed since it was loaded — by another
            # writer, a batch of our own, gc. Without this reload, each would be read
            # by itself: one request per chunk of a new checkpoint on S3.
            index = objects.refresh_packs()
        self._runs, self._run_of, self._slices = _plan_runs(index, wanted)
        self._budget = _Budget(BATCH_BYTES)
        self._pool: ThreadPoolExecutor | None = None
        if concurrency:
            from concurrent.futures import ThreadPoolExecutor  # imports logging: only here

            self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="cas-read")
        self._fetches: dict[int, Future[bytes | None] | _WhenAsked] = {}
        self._next = 0  # the next run to fetch
        self._done = 0  # positions before this one were read or skipped
        self._fill()

    def _fill(self) -> None:
        while self._next < len(self._runs):
            size = self._runs[self._next].size
            with self._budget.cond:
                if self._budget.used and self._budget.used + size > self._budget.limit:
                    return
                self._budget.used += size
            run = self._runs[self._next]
            if self._pool is None:
                self._fetches[self._next] = _WhenAsked(self._fetch, run)
            else:
                self._fetches[self._next] = self._pool.submit(self._fetch, run)
            self._next += 1

    def _fetch(self, run: _Run) -> bytes | None:
        try:
            if run.pack is None:
                return self.objects.read(self._digests[run.first], verify=False)
            return self.objects.read_range(run.pack, run.start, run.size)
        except FileNotFoundError:
            return None  # read directly when asked for: reported with the reader's wording

    def read(self, digest: str, verify: bool = True, where: str = "") -> bytes:
        done = self._done
        if (
            done < len(self._digests)
            and self._digests[done] == digest
            and self._run_of[done] < self._next  # its run is fetched (or being fetched)
        ):
            position: int | None = done  # the next one planned: what a checkout asks for
        else:
            fetching = self._next < len(self._runs)
            planned = self._runs[self._next].first if fetching else len(self._digests)
            position = next((p for p in range(done, planned) if self._digests[p] == digest), None)
        if position is None:
            return self.objects.read(digest, verify, where)
        run = self._run_of[position]
        first_run = self._run_of[done]
        for skipped in range(first_run, run):
            self._release(skipped)
        data = self._fetches[run].result()
        self._done = position + 1
        if position == self._runs[run].last:
            self._release(run)
            self._fill()  # budget freed: fetch further ahead
        elif run > first_run:
            self._fill()
        if data is None:
            return self.objects.read(digest, verify, where)
        if self._runs[run].pack is not None:
            offset, size = self._slices[position]
            data = data[offset : offset + size]
        if verify and (got := digest_bytes(data)) != digest:
            raise CorruptObject(digest, got, where)
        return data

    def _release(self, run: int) -> None:
        future = self._fetches.pop(run, None)
        if future is not None:
            future.cancel()
            self._budget.give(self._runs[run].size)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class PackBatch:
    """The store as one batch of writes sees it: ``put`` stores into packs.

    Everything but ``put``/``missing``/``has`` is the store's own (``ObjectStore.batch``).
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.writer = PackWriter(objects, skip=self._stored)
        self._index: PackIndex | None = None

    def _stored(self, digest: str) -> bool:
        # Reloaded at the first put — under the caller's lease, so nothing it names is
        # deleted before the batch's version is recorded; a batch that writes nothing
        # (an unchanged snapshot) never reads the index.
        if self._index is None:
            self._index = self.objects.refresh_packs()
        return digest in self._index

    def put(
        self, data: bytes | bytearray | memoryview, digest: str | None = None, at: int | None = None
    ) -> str:
        digest = digest or digest_bytes(data)
        self.writer.put(data, digest, at)
        return digest

    def has(self, digest: str) -> bool:
        return self.writer.has(digest) or self.objects.has(digest)

    def missing(self, digests: Iterable[str]) -> set[str]:
        """What the store lacks, counting this batch's objects as stored (they will be
        durable before the batch ends, so before anything that references them)."""
        return {d for d in self.objects.missing(digests) if not self.writer.has(d)}

    def __getattr__(self, name: str) -> object:
        return getattr(self.objects, name)

    def __enter__(self) -> PackBatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.writer.close()
        else:
            self.writer.abort()


class _MemoryPack:
    """A pack built in memory, then uploaded whole: the pack, then its index (rule 1)."""

    def __init__(self, objects: ObjectStore, pack: str) -> None:
        self.objects = objects
        self.pack = pack
        self.body = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.body += data

    def finish(self, index: bytes) -> None:
        root, fs = self.objects.root, self.objects.fs
        body, self.body = bytes(self.body), bytearray()
        _remote().put(fs, posixpath.join(root, packs.pack_name(self.pack)), body)
        _remote().put(fs, posixpath.join(root, packs.index_name(self.pack)), index)

    def abort(self) -> None:
        self.body = bytearray()


class _FilePack:
    """A pack appended to a temp file beside its final name, then renamed (rule 1)."""

    def __init__(self, objects: LocalObjects, pack: str) -> None:
        self.objects = objects
        folder = os.path.join(objects.root, packs.FOLDER)
        os.makedirs(folder, exist_ok=True)
        self.final = os.path.join(objects.root, *packs.pack_name(pack).split("/"))
        self.index = os.path.join(objects.root, *packs.index_name(pack).split("/"))
        self.temp = f"{self.final}{TEMP_MARK}{secrets.token_hex(6)}"
        self.out = open(self.temp, "xb", buffering=PACK_WRITE_BUFFER)  # noqa: SIM115 - closed in finish/abort

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.out.write(data)
        except OSError as exc:  # write() errors (ENOSPC) name no file: name it
            self.abort()
            raise OSError(exc.errno, f"{exc.strerror} while storing objects", self.final) from exc

    def finish(self, index: bytes) -> None:
        try:
            self.out.flush()
            if self.objects.fsync:
                os.fsync(self.out.fileno())
            self.out.close()
            os.chmod(self.temp, 0o444)
            os.replace(self.temp, self.final)
            temp = f"{self.index}{TEMP_MARK}{secrets.token_hex(6)}"
            with open(temp, "xb") as out:
                out.write(index)
                if self.objects.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.chmod(temp, 0o444)
            os.replace(temp, self.index)
        except OSError as exc:
            self.abort()
            raise OSError(exc.errno, f"{exc.strerror} while storing objects", self.final) from exc

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


class LocalObjects(ObjectStore):
    """``ObjectStore`` for a local folder: direct syscalls and atomic renames.

    ``fsync=True`` flushes each object to disk before it becomes visible, for
    stores that must survive power loss, not just process crashes.
    """

    background_uploads = False  # a finished pack is renamed into place: no upload to wait for

    def __init__(self, root: str, fsync: bool = False) -> None:
        # No fsspec filesystem up front: importing fsspec costs every command ~0.1 s of
        # start-up, and every method here uses plain ``os`` calls.
        self.root = os.path.abspath(root)
        self.dir = posixpath.join(self.root, "objects")
        self.fsync = fsync
        self._made: set[str] = set()
        self._index = PackIndex()
        self._open_packs: dict[str, int] = {}  # pack id -> descriptor, for pread
        self._open_lock = threading.Lock()

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The local filesystem as fsspec sees it, for code written against ``ObjectStore``."""
        import fsspec

        return fsspec.filesystem("file")

    # -- packs: files read with pread through descriptors kept open ---------------
    def refresh_packs(self) -> PackIndex:
        index = super().refresh_packs()
        with self._open_lock:  # a removed pack's space is freed once nothing holds it open
            for pack in set(self._open_packs) - set(index.packs()):
                os.close(self._open_packs.pop(pack))
        return index

    def _load_indexes(self, ids: list[str]) -> dict[str, bytes | Exception]:
        out: dict[str, bytes | Exception] = {}
        for pack in ids:
            try:
                out[pack] = self.read_record(packs.index_name(pack))
            except OSError as exc:
                out[pack] = exc
        return out

    def read_range(self, pack: str, offset: int, size: int) -> bytes:
        return os.pread(self._pack_fd(pack), size, offset)

    def pack_file(self, pack: str) -> str:
        return self._record_path(packs.pack_name(pack))

    def _pack_fd(self, pack: str) -> int:
        fd = self._open_packs.get(pack)
        if fd is None:
            with self._open_lock:
                fd = self._open_packs.get(pack)
                if fd is None:
                    fd = self._open_packs[pack] = os.open(self.pack_file(pack), os.O_RDONLY)
        return fd

    def locate(self, digest: str) -> tuple[str, int, int] | None:
        """``(file, offset, size)`` of the object's bytes on disk (for kernel copies), or
        ``None`` when it is in no pack and has no loose file. Unverified."""
        where = self.pack_index().get(digest)
        if where is not None:
            return self.pack_file(where.pack), where.offset, where.size
        try:
            return self.path(digest), 0, os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            where = self.refresh_packs().get(digest)
        return None if where is None else (self.pack_file(where.pack), where.offset, where.size)

    def pack_sink(self, pack: str) -> PackSink:
        return _FilePack(self, pack)

    def close(self) -> None:
        """Close the packs held open for reading (reopened if the store is used again)."""
        with self._open_lock:
            for fd in self._open_packs.values():
                os.close(fd)
            self._open_packs.clear()

    def put_loose_many(self, items: dict[str, bytes]) -> None:
        for digest, data in items.items():
            self.put(data, digest)

    def _delete_loose(self, digests: set[str]) -> None:
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(digest))

    # -- loose objects: plain files -------------------------------------------
    def _read_loose(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as stream:
            return stream.read()

    def _loose_exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def _loose_missing(self, digests: set[str]) -> set[str]:
        return {d for d in digests if not os.path.exists(self.path(d))}

    def _loose_stat(self, digest: str) -> tuple[int, float]:
        st = os.stat(self.path(digest))
        return st.st_size, st.st_mtime

    def _loose_inventory(self) -> Iterator[tuple[str, int, float]]:
        if not os.path.isdir(self.dir):
            return
        for fan in os.scandir(self.dir):
            if not fan.is_dir():
                continue
            for entry in os.scandir(fan.path):
                if is_digest(fan.name + entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat()
                        yield fan.name + entry.name, st.st_size, st.st_mtime

    def touch(self, digest: str) -> bool:
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            return self.has(digest)  # packed: the lease protocol, not times, protects it
        return True

    def put(
        self, data: bytes | bytearray | memoryview, digest: str | None = None, at: int | None = None
    ) -> str:
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

    def read_ahead(
        self, wanted: Iterable[tuple[str, int]]
    ) -> contextlib.AbstractContextManager[ObjectStore | ReadAhead]:
        # No threads (a read from the page cache waits for nothing), but neighbours
        # in a pack come in one read: 20,000 small files cost ~20 reads, not 20,000.
        return ReadAhead(self, list(wanted), concurrency=0)

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
        folders = [os.path.join(self.root, "locks"), os.path.join(self.root, packs.FOLDER)]
        if os.path.isdir(self.dir):
            folders += [fan.path for fan in os.scandir(self.dir) if fan.is_dir()]
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    if TEMP_MARK in entry.name:
                        yield entry.path
