"""Pack files: many objects in one file (one S3 object), found through an index.

One object per chunk costs a file creation on a local disk (temp file, write,
rename) and a request on S3 — more than cutting and hashing the chunk. A batch
of writes (a snapshot) therefore stores its objects in packs of about
``PACK_BYTES``, as restic packs blobs and Xet groups chunks into xorbs:

* ``packs/<id>.pack`` — the objects' bytes back to back (``id``: 32 random hex digits);
* ``packs/<id>.idx`` — its index: each object's digest, offset and size, then a
  checksum of the index itself.

The rules that keep the catalog from ever pointing at a missing object:

1. A pack is whole before its index exists (locally a temp file renamed into
   place, then the index; on S3 the pack's PUT, then the index's), so an index
   always describes a whole pack, and an object counts as stored only when an
   index names it (or it is a loose object file, the layout of small batches).
2. A batch returns only when every pack and index it wrote is durable: the
   objects are stored before the manifest that needs them (``snapshot.py``).
3. Packs are immutable. gc frees an object in a pack by *repacking*: the pack's
   other objects go to a new pack (rule 1), then the old index goes, then the old
   pack. Readers that find a pack gone reload the index and find the new copy.
4. A pack without an index is a leftover of a writer that died between the two
   writes; gc removes it once it is older than any write takes.

Batches of fewer than ``PACK_MIN_OBJECTS`` objects are stored loose
(``objects/ab/cdef...``): a Drive put of a few files should not leave a pack for
every call, and every index is read when a process first needs one.
"""

from __future__ import annotations

import secrets
import struct
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .errors import CasError, CorruptObject
from .hashing import Hasher, digest_bytes

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from .objects import ObjectStore

#: A pack is closed once it holds this many bytes.
PACK_BYTES = 16 * 2**20
#: A batch of fewer objects than this stores them as loose object files.
PACK_MIN_OBJECTS = 16
#: An object put with ``at`` (its offset in a large file) starts in its pack at the same
#: offset modulo this, so a checkout's kernel copy from the pack into the file runs page
#: against page: ``copy_file_range`` between offsets of different remainders took
#: 0.39 s per GiB here, between page-congruent ones 0.26 s (ext4, page cache warm).
#: A file's chunks follow each other, so only its first new chunk in a pack is padded,
#: and never by more than 1/32 of the object (chunks are >= 128 KiB): small objects
#: are not padded.
ALIGN = 4096
#: Remote packs uploaded at once per batch (each holds ``PACK_BYTES`` in memory).
UPLOADS_IN_FLIGHT = 3

FOLDER = "packs"
PACK_SUFFIX = ".pack"
INDEX_SUFFIX = ".idx"
_MAGIC = b"CASPACK1"
_HEADER = struct.Struct(">8sQ")  # magic, pack size
_ENTRY = struct.Struct(">16sQQ")  # digest, offset, size
_CHECKSUM = 16  # xxh3-128 of everything before it


class Location(NamedTuple):
    """Where an object lies: in pack ``pack`` at ``offset``, ``size`` bytes long."""

    pack: str
    offset: int
    size: int


def new_pack_id() -> str:
    return secrets.token_hex(16)


def pack_name(pack: str) -> str:
    """The pack's record name, relative to the store root."""
    return f"{FOLDER}/{pack}{PACK_SUFFIX}"


def index_name(pack: str) -> str:
    return f"{FOLDER}/{pack}{INDEX_SUFFIX}"


def encode_index(entries: Iterable[tuple[str, int, int]], pack_size: int) -> bytes:
    """The index of a pack of ``pack_size`` bytes holding ``(digest, offset, size)``."""
    body = bytearray(_HEADER.pack(_MAGIC, pack_size))
    for digest, offset, size in entries:
        body += _ENTRY.pack(bytes.fromhex(digest), offset, size)
    checksum = Hasher()
    checksum.update(body)
    return bytes(body) + bytes.fromhex(checksum.hexdigest())


def decode_index(data: bytes) -> list[tuple[str, int, int]]:
    """The entries of an index; ``ValueError`` saying what is wrong with a damaged one."""
    if len(data) < _HEADER.size + _CHECKSUM or (len(data) - _HEADER.size - _CHECKSUM) % _ENTRY.size:
        raise ValueError(f"an index cannot be {len(data)} bytes long")
    checksum = Hasher()
    checksum.update(data[:-_CHECKSUM])
    if bytes.fromhex(checksum.hexdigest()) != data[-_CHECKSUM:]:
        raise ValueError("its checksum does not match its content")
    magic, pack_size = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError(f"it starts with {magic!r}, not {_MAGIC!r}")
    entries = [
        (raw.hex(), offset, size)
        for raw, offset, size in _ENTRY.iter_unpack(data[_HEADER.size : -_CHECKSUM])
    ]
    if any(offset + size > pack_size for _, offset, size in entries):
        raise ValueError(f"it points past the end of its {pack_size}-byte pack")
    return entries


class PackIndex:
    """Every index of the store, as ``digest -> Location``; brought up to date by ``update``.

    A digest held by several packs (a repack interrupted by a crash) is found in
    the pack with the smallest id, so every process picks the same copy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # pack id -> (time written, its entries)
        self._packs: dict[str, tuple[float, list[tuple[str, int, int]]]] = {}
        self._where: dict[str, Location] = {}
        #: Index record name -> why it could not be read (reported by ``cas verify``).
        self.damaged: dict[str, str] = {}
        self.loaded = False

    def update(
        self, listed: dict[str, float], load: Callable[[list[str]], dict[str, bytes | Exception]]
    ) -> None:
        """Match ``listed`` (``{pack id: time written}``, from a fresh listing).

        ``load`` reads index records by pack id; only packs new to this index are read
        (packs never change), packs no longer listed are forgotten.
        """
        with self._lock:
            new = [p for p in listed if p not in self._packs and index_name(p) not in self.damaged]
            gone = [p for p in self._packs if p not in listed]
            for pack in gone:
                del self._packs[pack]
            self.damaged = {n: why for n, why in self.damaged.items() if n[6:-4] in listed}
            for pack, data in (load(new) if new else {}).items():
                if isinstance(data, FileNotFoundError):
                    continue  # removed (by gc) since the listing
                if isinstance(data, Exception):
                    raise data
                try:
                    self._packs[pack] = (listed[pack], decode_index(data))
                except ValueError as exc:
                    self.damaged[index_name(pack)] = str(exc)
            if gone:  # rare (gc): start over from the packs that are left
                self._where = {
                    digest: Location(pack, offset, size)
                    for pack in sorted(self._packs, reverse=True)  # the smallest id wins
                    for digest, offset, size in self._packs[pack][1]
                }
            else:  # the common case, a few new packs: add them, not rebuild everything
                for pack in new:
                    for digest, offset, size in self._packs.get(pack, (0.0, []))[1]:
                        held = self._where.get(digest)
                        if held is None or pack < held.pack:
                            self._where[digest] = Location(pack, offset, size)
            self.loaded = True

    def get(self, digest: str) -> Location | None:
        return self._where.get(digest)

    def __contains__(self, digest: object) -> bool:
        return digest in self._where

    def __len__(self) -> int:
        return len(self._where)

    def packs(self) -> dict[str, float]:
        """``{pack id: time written}`` of every pack with a readable index."""
        return {pack: when for pack, (when, _) in self._packs.items()}

    def written(self, pack: str) -> float:
        """When the pack was written (its index's time, on the store's clock); 0 if gone."""
        return self._packs.get(pack, (0.0, []))[0]

    def entries(self, pack: str) -> list[tuple[str, int, int]]:
        return self._packs[pack][1]

    def objects(self) -> list[tuple[str, Location, float]]:
        """``(digest, where, time its pack was written)`` of every object, once each."""
        return [(d, where, self._packs[where.pack][0]) for d, where in self._where.items()]


class PackSink(Protocol):
    """Where a pack's bytes go as they are written (a temp file, a memory buffer)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self, index: bytes) -> None:
        """Make the pack, then its index, durable and visible (rule 1)."""

    def abort(self) -> None: ...


class PackWriter:
    """Objects stored in packs (or loose, for a small batch); ``close`` makes them durable.

    ``skip(digest)`` says an object is stored already. Safe to call from several
    threads; objects are appended in the order ``put`` receives them.
    """

    def __init__(self, objects: ObjectStore, skip: Callable[[str], bool]) -> None:
        self.objects = objects
        self._skip = skip
        self._lock = threading.Lock()
        # The first objects and their ``at``, until the batch proves big enough for a pack.
        self._held: dict[str, tuple[bytes, int | None]] = {}
        self._sink: PackSink | None = None
        self._pack = ""
        self._entries: list[tuple[str, int, int]] = []
        self._offset = 0
        self._queued: set[str] = set()
        self._uploads: list[Future[None]] = []  # finished packs still being uploaded
        self._pool: ThreadPoolExecutor | None = None
        #: Packs this writer finished, by id.
        self.written: list[str] = []

    def has(self, digest: str) -> bool:
        """Whether ``digest`` was put here (it is durable once ``close`` returns)."""
        return digest in self._queued

    def put(self, data: bytes | bytearray | memoryview, digest: str, at: int | None = None) -> None:
        """Store ``data`` (``digest``) unless stored; ``at``: where it begins in its file,
        for a large file's objects (see ``ALIGN``)."""
        with self._lock:
            if digest in self._queued or self._skip(digest):
                return
            self._queued.add(digest)
            # Held (copied: the caller may reuse its buffer) only until the batch proves
            # big enough for a pack; once one is written, the rest go straight to packs.
            if self._sink is None and not self.written and len(self._held) < PACK_MIN_OBJECTS - 1:
                self._held[digest] = (bytes(data), at)
                return
            if self._sink is None:
                self._start()
                for held, (body, held_at) in self._held.items():
                    self._append(held, body, held_at)
                self._held.clear()
            self._append(digest, data, at)
            if self._offset >= PACK_BYTES:
                self._finish()

    def _start(self) -> None:
        self._pack = new_pack_id()
        self._sink = self.objects.pack_sink(self._pack)
        self._entries, self._offset = [], 0

    def _append(self, digest: str, data: bytes | bytearray | memoryview, at: int | None) -> None:
        assert self._sink is not None
        pad = 0 if at is None else (at - self._offset) % ALIGN
        if pad and pad * 32 <= len(data):
            self._sink.write(bytes(pad))  # not in the index: no object's bytes
            self._offset += pad
        self._sink.write(data)
        self._entries.append((digest, self._offset, len(data)))
        self._offset += len(data)

    def _finish(self) -> None:
        assert self._sink is not None
        sink, index = self._sink, encode_index(self._entries, self._offset)
        self._sink = None
        self.written.append(self._pack)
        if not self.objects.background_uploads:
            sink.finish(index)
            return
        # The next pack fills while this one uploads; at most UPLOADS_IN_FLIGHT at once.
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # imports logging: only here

            self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="cas-pack")
        while len(self._uploads) >= UPLOADS_IN_FLIGHT:
            self._uploads.pop(0).result()
        self._uploads.append(self._pool.submit(sink.finish, index))

    def close(self) -> None:
        """Store what is still held or half packed; every object is durable on return."""
        try:
            with self._lock:
                if self._sink is not None:
                    self._finish()
                elif self._held:
                    self.objects.put_loose_many({d: body for d, (body, _) in self._held.items()})
                    self._held.clear()
            for upload in self._uploads:
                upload.result()
        finally:
            self._stop_uploads()

    def _stop_uploads(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self) -> None:
        """Give up: nothing more is written (what was finished stays, unreferenced)."""
        with self._lock:
            if self._sink is not None:
                self._sink.abort()
                self._sink = None
            self._held.clear()
        self._stop_uploads()


def repack(objects: ObjectStore, index: PackIndex, doomed: set[str]) -> None:
    """Rewrite every pack holding a ``doomed`` object without it (gc, under its lock).

    A pack's other objects — the copy the index uses, verified — go to a new pack
    first; only then are the old index and pack deleted (rule 3). They are read in
    one read of the pack (one request on S3), not one each. A damaged object stops
    gc before anything of its pack is deleted.
    """
    affected = [p for p in sorted(index.packs()) if any(e[0] in doomed for e in index.entries(p))]
    for pack in affected:
        keep = [
            (digest, offset, size)
            for digest, offset, size in index.entries(pack)
            if digest not in doomed and index.get(digest) == Location(pack, offset, size)
        ]
        if keep:
            start = min(offset for _, offset, _ in keep)
            end = max(offset + size for _, offset, size in keep)
            body = memoryview(objects.read_range(pack, start, end - start))
            writer = PackWriter(objects, skip=lambda _: False)
            try:
                for digest, offset, size in keep:
                    data = body[offset - start : offset - start + size]
                    if (got := digest_bytes(data)) != digest:
                        damaged = CorruptObject(digest, got, f"pack {pack}")
                        raise CasError(
                            f"gc stopped before rewriting pack {pack}: {damaged}; run cas verify"
                        )
                    writer.put(data, digest, at=offset)  # keeps its place modulo ALIGN
                writer.close()
            except BaseException:
                writer.abort()
                raise
        objects.delete_record(index_name(pack))  # the index first: rule 3
        objects.delete_record(pack_name(pack))
