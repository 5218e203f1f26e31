"""Snapshot: a local file or folder → objects → manifest → a catalog version.

Write order is the commit protocol (restic's rule): every object a manifest
needs is stored first, then the manifest object, and only then the catalog row.
A crash at any point leaves at most unreferenced objects, never a version that
points at something missing.
"""

from __future__ import annotations

import os
import stat
import warnings
from datetime import datetime, timezone

from . import chunking
from .catalog import Catalog, Version
from .errors import SourceChanged, VersionExists
from .hashing import Hasher, digest_bytes
from .localstate import Known, LocalState, known_from_stat
from .manifest import (
    DIR,
    FILE,
    SYMLINK,
    Entry,
    Manifest,
    file_mode_bits,
    link_stays_inside,
    mode_bits,
)
from .objects import ObjectStore
from .progress import Progress
from .tree import kind, walk

#: Attempts at reading a file that keeps changing before giving up.
READ_ATTEMPTS = 3


def snapshot(
    objects: ObjectStore,
    catalog: Catalog,
    state: LocalState,
    work: str,
    path: str,
    source: str,
    progress: Progress | None = None,
) -> Version:
    """Record ``source`` as the next version of ``(work, path)``; return that version.

    Unchanged content returns the existing latest version and records nothing.
    Files whose stat matches the stat cache are not read again.
    """
    source = os.path.abspath(source)
    try:
        top = os.stat(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot snapshot {work}:{path}: {source} does not exist") from None
    latest = catalog.latest(work, path)
    reader = _Reader(objects, state.under(source), _stored_before(objects, latest))
    reader.progress = progress or Progress()

    if stat.S_ISREG(top.st_mode):
        manifest = Manifest.build(FILE, [reader.file_entry(source, ".", top)])
    elif stat.S_ISDIR(top.st_mode):
        manifest = Manifest.build(DIR, _dir_entries(reader, source))
    else:
        raise ValueError(f"cannot snapshot {source}: not a file or folder")

    version = record(objects, catalog, work, path, manifest, latest)
    state.remember(reader.learned)
    return version


def record(
    objects: ObjectStore,
    catalog: Catalog,
    work: str,
    path: str,
    manifest: Manifest,
    latest: Version | None = None,
) -> Version:
    """Commit ``manifest`` (whose content objects are stored) as the next version.

    Stores the manifest object, then claims the next number in the catalog. Returns
    the latest version unchanged when it already has this manifest. ``latest`` is
    the caller's reading of the current latest version, if it has one.
    """
    latest = latest if latest is not None else catalog.latest(work, path)
    data = manifest.encode()
    digest = digest_bytes(data)
    if latest is not None and latest.manifest == digest:
        return latest
    objects.put(data, digest)
    return _record_next(catalog, latest, work, path, digest, manifest)


def _stored_before(objects: ObjectStore, latest: Version | None) -> set[str]:
    """Objects the previous version references: they are in the store already."""
    if latest is None:
        return set()
    try:
        return Manifest.decode(objects.read(latest.manifest)).objects()
    except (OSError, ValueError):
        return set()  # a damaged previous version must not block a new snapshot


def _record_next(
    catalog: Catalog, latest: Version | None, work: str, path: str, digest: str, manifest: Manifest
) -> Version:
    """Claim the next version number; on a lost race, re-read and try the one after."""
    while True:
        number = latest.number + 1 if latest else 1
        version = Version(
            work,
            path,
            number,
            digest,
            datetime.now(timezone.utc),
            len(manifest.files),
            manifest.size,
        )
        try:
            catalog.create(version)
            return version
        except VersionExists:
            latest = catalog.latest(work, path)
            if latest is not None and latest.manifest == digest:
                return latest  # a concurrent writer recorded the same content


def _dir_entries(reader: _Reader, source: str) -> list[Entry]:
    entries = []
    for rel, st in walk(source).items():
        what = kind(st)
        full = os.path.join(source, rel)
        if what == "dir":
            entries.append(Entry(rel, DIR, mode_bits(st.st_mode)))
        elif what == "file":
            entries.append(reader.file_entry(full, rel, st))
        elif what == "symlink":
            target = os.readlink(full)
            if link_stays_inside(rel, target):
                entries.append(Entry(rel, SYMLINK, 0o777, target=target))
            else:
                warnings.warn(f"skipping {full}: symlink to {target} leaves the tree", stacklevel=3)
        else:
            warnings.warn(f"skipping {full}: not a file, folder or symlink", stacklevel=3)
    return entries


class _Reader:
    """Turns files into entries, reading only what the stat cache cannot vouch for."""

    def __init__(self, objects: ObjectStore, known: dict[str, Known], stored: set[str]) -> None:
        self.objects = objects
        self.known = known
        self.stored = stored
        self.learned: dict[str, Known] = {}

    progress: Progress = Progress()

    def file_entry(self, full: str, rel: str, st: os.stat_result) -> Entry:
        self.progress.advance(1, st.st_size)
        cached = self.known.get(full)
        if cached is not None and cached.matches(st) and self._usable(cached):
            mode = file_mode_bits(st.st_mode)
            return Entry(rel, FILE, mode, st.st_size, cached.digest, cached.chunks)
        digest, chunks, size, seen = self._read(full)
        self.learned[full] = known_from_stat(seen, digest, chunks)
        return Entry(rel, FILE, file_mode_bits(seen.st_mode), size, digest, chunks)

    def _usable(self, cached: Known) -> bool:
        # Chunk lists from another chunker setting would not dedup with new ones.
        if cached.size > chunking.THRESHOLD and not cached.chunks:
            return False
        needed = [d for d, _ in cached.chunks] if cached.chunks else [cached.digest]
        # touch: an object this snapshot relies on without rewriting it must not look
        # old and unreferenced to a gc running at the same time.
        return all(d in self.stored or self.objects.touch(d) for d in needed)

    def _read(self, full: str) -> tuple[str, tuple[tuple[str, int], ...], int, os.stat_result]:
        for _ in range(READ_ATTEMPTS):
            with open(full, "rb") as stream:
                before = os.fstat(stream.fileno())
                if before.st_size <= chunking.THRESHOLD:
                    data = stream.read()
                    digest, chunks, size = self.objects.put(data), (), len(data)
                else:
                    digest, chunks, size = self._read_chunked(stream)
                after = os.fstat(stream.fileno())
            if before.st_size == after.st_size == size and before.st_mtime_ns == after.st_mtime_ns:
                return digest, chunks, size, after
        raise SourceChanged(full)

    def _read_chunked(self, stream) -> tuple[str, tuple[tuple[str, int], ...], int]:
        whole = Hasher()
        chunks = []
        for piece in chunking.chunks(stream):
            whole.update(piece)
            digest = digest_bytes(piece)
            if digest not in self.stored:
                self.objects.put(piece, digest)
            chunks.append((digest, len(piece)))
        return whole.hexdigest(), tuple(chunks), sum(s for _, s in chunks)
