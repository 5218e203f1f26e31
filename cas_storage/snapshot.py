"""Snapshot: a local file or folder → objects → manifest → a catalog version.

Write order is the commit protocol (restic's rule): every object a manifest
needs is stored first, then the manifest object, and only then the catalog row.
A crash at any point leaves at most unreferenced objects, never a version that
points at something missing.

``build`` turns a local tree into a manifest (storing what is new) and says which
objects it *reused* without writing them — those named by the stat cache or by
the previous version. ``record`` commits a manifest. Both run under the store's
shared lease (``locks.py``), so gc deletes nothing between the two; objects
reused from before the lease are checked to still exist (``gc`` may have freed
them before the lease began) and re-read when not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO

from . import chunking, kernelcopy
from .catalog import Catalog, Version
from .errors import CasError, InvalidName, SourceChanged, VersionExists, not_found
from .hashing import Hasher, digest_bytes
from .localstate import (
    FolderStamp,
    Known,
    KnownFiles,
    identity,
    known_from_stat,
)
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
from .tree import kind, paused_gc, walk

#: Attempts at reading a file that keeps changing before giving up.
READ_ATTEMPTS = 3
#: The quiet period for a tree that a running program may be writing (``quiet=``): a
#: file modified less than this long ago may be half written, more ``write`` calls to
#: come, so it is read only once it has been quiet this long (racy-git's rule).
QUIET_SECONDS = 0.2
#: Quiet periods to wait for, at most, before a file that keeps changing is refused.
QUIET_ATTEMPTS = 50
#: Lost races for a version number before giving up (each loss means another writer won).
RECORD_ATTEMPTS = 200


@dataclass
class Built:
    """A manifest of a local tree, what it reused unread, and what the stat cache learns:
    the files it vouched for (``kept``, unread) and the ones read (``learned``)."""

    manifest: Manifest
    reused: set[str] = field(default_factory=set)
    learned: dict[str, Known] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


def build(
    objects: ObjectStore,
    known: KnownFiles,
    source: str,
    stored: set[str],
    progress: Progress | None = None,
    quiet: float = 0.0,
    found: dict[str, os.stat_result] | None = None,
) -> Built:
    """The manifest of ``source``, storing every object that ``stored`` lacks.

    ``known`` is the stat cache below ``source``; ``stored`` the objects taken to
    be in the store already (the previous version's); ``found`` a walk of the
    folder ``source`` already made (``survey``'s). Raises ``FileNotFoundError``
    when ``source`` does not exist.
    """
    try:
        top = os.stat(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot snapshot {not_found(source)}") from None
    if not (stat.S_ISREG(top.st_mode) or stat.S_ISDIR(top.st_mode)):
        raise ValueError(f"cannot snapshot {source}: not a file or folder")
    # ``objects`` is the caller's batch: each object is put as its file is read (a
    # pack append, once per digest), and durable when the batch ends, before the record.
    reader = _Reader(objects, known, stored, progress or Progress(), quiet)
    # Built without validating again: every entry comes from this walk (names the
    # filesystem gave, links checked by link_stays_inside) and our own hashing.
    if stat.S_ISREG(top.st_mode):
        reader.progress.start(total_bytes=top.st_size)
        entry = reader.file_entry(source, ".", top)
        if entry is None:
            raise FileNotFoundError(f"cannot snapshot {source}: it vanished while being read")
        manifest = Manifest.build(FILE, [entry], validate=False)
    else:
        with paused_gc():
            entries = _dir_entries(reader, source, found)
            manifest = Manifest.build(DIR, entries, validate=False)
    return Built(manifest, reader.reused, reader.learned, reader.kept)


@dataclass
class Survey:
    """What ``survey`` found: the walk of a folder (begun at ``walked_ns``), and the
    manifest when nothing had to be read for it."""

    found: dict[str, os.stat_result] | None = None
    built: Built | None = None
    walked_ns: int = 0
    top: os.stat_result | None = None  # the folder's own stat, taken after ``walked_ns``


def survey(known: KnownFiles, source: str) -> Survey:
    """The manifest of ``source`` if the stat cache vouches for every file in it.

    Reads no file and touches no store, so it needs no lease: an unchanged re-put
    compares its digest with the latest version's and is done (``Store.snapshot``).
    Stops at the first file it would have to read (or anything ``build`` would warn
    about) and returns the walk alone, which ``build`` then reuses: a changed tree
    is walked once. A name that is not UTF-8 is refused here, as ``build`` would;
    other errors (no such source) are left to ``build``.
    """
    walked_ns = time.time_ns()
    try:
        top = os.stat(source)
    except OSError:
        return Survey()
    reader = _Survey(known)
    try:
        if stat.S_ISREG(top.st_mode):
            entry = reader.file_entry(source, ".", top)
            return Survey(None, reader.built(Manifest.build(FILE, [entry], validate=False)))
        if not stat.S_ISDIR(top.st_mode):
            return Survey()
        with paused_gc():
            found = walk(source)
            try:
                entries = _dir_entries(reader, source, found)
            except _NeedsReading:
                return Survey(found, None, walked_ns, top)
            built = reader.built(Manifest.build(DIR, entries, validate=False))
            return Survey(found, built, walked_ns, top)
    except _NeedsReading:
        return Survey()


def stamp_of_walk(
    surveyed: Survey, tree: str | None, manifest: Manifest, digest: str
) -> FolderStamp | None:
    """The stamp of a snapshot of a folder, made from its survey's walk: the manifest
    (``digest``) and the stat-cache record (``tree``) it was recorded with, and the
    identity of every folder as walked. ``None`` when that would not describe the whole
    tree: no record, no walk (a single file), or something walked that the manifest
    lacks (skipped with a warning, or gone while being read)."""
    found, top = surveyed.found, surveyed.top
    if tree is None or found is None or top is None or len(found) != len(manifest.entries):
        return None
    folders = [("", identity(top))]
    folders += [(rel, identity(st)) for rel, st in found.items() if stat.S_ISDIR(st.st_mode)]
    return FolderStamp(tree, digest, len(manifest.files), surveyed.walked_ns, tuple(folders))


def build_durable(
    objects: ObjectStore,
    known: KnownFiles,
    source: str,
    stored: set[str],
    progress: Progress | None = None,
    quiet: float = 0.0,
    surveyed: Survey | None = None,
) -> Built:
    """``build``, then make sure every object it reused unread still exists.

    Run under the shared lease: an object found missing (freed by a gc that ran
    before the lease) is forgotten and its file read again; objects written under
    the lease stay, because gc cannot delete while the lease is held. ``surveyed``
    (``survey(known, source)``): its walk is not repeated, and its manifest, when it
    has one, is the first attempt's.
    """
    found = surveyed.found if surveyed is not None else None
    first = surveyed.built if surveyed is not None else None
    for _ in range(READ_ATTEMPTS):
        if first is not None:
            built, first = first, None
            if progress is not None:  # as a build reports files the stat cache vouches for
                progress.start(total_bytes=built.manifest.size)
                progress.advance(len(built.kept), built.manifest.size)
        else:
            built = build(objects, known, source, stored, progress, quiet, found)
        # The previous version's objects exist: it was read under the lease, and a
        # recorded version never points at a missing object.
        gone = objects.missing(built.reused - stored)
        if not gone:
            return built
        stored = stored - gone
        known = KnownFiles.of({p: k for p, k in known.items() if not gone.intersection(_needs(k))})
    raise CasError(f"cannot snapshot {source}: objects keep disappearing from the store")


def record(
    objects: ObjectStore,
    catalog: Catalog,
    work: str,
    path: str,
    manifest: Manifest,
    latest: Version | None,
) -> Version:
    """Commit ``manifest`` (whose content objects are stored) as the next version.

    Run under the shared lease; ``latest`` is the latest version read under that
    same lease (so gc has dropped nothing of it). Returns it unchanged when it has
    this very manifest. Stores the manifest object, then claims the next number,
    create-only: if another writer recorded meanwhile, the claim fails, and a lost
    race re-reads and tries the next, at most ``RECORD_ATTEMPTS`` times.
    """
    data = manifest.encode()
    digest = digest_bytes(data)
    if latest is not None and latest.manifest == digest:
        return latest
    objects.put(data, digest)
    for attempt in range(RECORD_ATTEMPTS):
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
            time.sleep(random.uniform(0, 0.001 * min(attempt, 50)))  # spread a pile-up
    raise CasError(
        f"could not record a version of {work}:{path}: lost the race for a version "
        f"number {RECORD_ATTEMPTS} times to other writers; try again"
    )


def _needs(known: Known) -> set[str]:
    return {d for d, _ in known.chunks} if known.chunks else {known.digest}


def _check_name(source: str, rel: str, target: str | None = None) -> None:
    """Refuse, naming it, a file whose name (or link target) is not valid UTF-8.

    Manifests hold names as UTF-8 text; such a name could not be restored
    byte-exactly, so nothing is recorded rather than something different.
    """
    text = rel if target is None else target
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(os.path.join(source, rel))
        what = "its name" if target is None else f"its link target {os.fsencode(target)!r}"
        raise InvalidName(
            f"cannot snapshot {raw!r}: {what} is not valid UTF-8; rename it (or move it out "
            "of the folder) and snapshot again"
        ) from None


def _dir_entries(
    reader: _Reader | _Survey, source: str, found: dict[str, os.stat_result] | None = None
) -> list[Entry]:
    entries = []
    found = walk(source) if found is None else found
    for rel in found:
        if not rel.isascii():
            _check_name(source, rel)
    is_file = stat.S_ISREG
    reader.progress.start(
        total_bytes=sum(st.st_size for st in found.values() if is_file(st.st_mode))
    )
    prefix = source if source.endswith("/") else source + "/"  # os.path.join, per file
    for rel, st in found.items():
        what = kind(st)
        full = prefix + rel
        if what == "dir":
            entries.append(Entry(rel, DIR, mode_bits(st.st_mode)))
        elif what == "file":
            entry = reader.file_entry(full, rel, st)
            if entry is not None:
                entries.append(entry)
        elif what == "symlink":
            try:
                target = os.readlink(full)
            except FileNotFoundError:
                continue  # removed during the walk: not part of the tree any more
            if not target.isascii():
                _check_name(source, rel, target)
            if link_stays_inside(rel, target):
                entries.append(Entry(rel, SYMLINK, 0o777, target=target))
            else:
                reader.skipping(full)
                warnings.warn(f"skipping {full}: symlink to {target} leaves the tree", stacklevel=3)
        else:
            reader.skipping(full)
            warnings.warn(f"skipping {full}: not a file, folder or symlink", stacklevel=3)
    return entries


def _open_file(full: str) -> tuple[int, os.stat_result]:
    """Open a file the walk saw as a regular file: its descriptor and its stat.

    ``SourceChanged`` if it no longer is one. Non-blocking and not following links,
    so a file replaced meanwhile by a fifo or a symlink is refused instead of
    blocking or leaving the tree. A descriptor, not a file object: a small file is
    then read with one ``read``, where a file object costs two more ``fstat``s and
    a ``read`` per file (a tenth of a 20,000-file put).
    """
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except NotADirectoryError:
        raise SourceChanged(full) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceChanged(full) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # a folder opens too: refused here
        os.close(fd)
        raise SourceChanged(full)
    return fd, st


def _quiet_stat(fd: int, full: str, quiet: float, st: os.stat_result) -> os.stat_result:
    """The stat of the open file ``full`` once it has not changed for ``quiet`` seconds.

    A file written moments ago may be half written, with more ``write`` calls to
    come; a read now could record a torn file that its stat would then vouch for.
    Taken on the open file (``st``: as it was opened), so a write after it shows in
    the stat after the read (the last change is older than the clock's granularity).
    ``SourceChanged`` when it keeps changing for ``QUIET_ATTEMPTS`` quiet periods. An
    mtime in the future (clock skew, ``touch -d``) is no sign of a writer: not waited for.
    """
    for _ in range(QUIET_ATTEMPTS):
        age = time.time() - st.st_mtime
        if age >= quiet or age < -1.0:
            return st
        time.sleep(quiet - max(age, 0.0))
        st = os.fstat(fd)
    raise SourceChanged(full)


def _read_small(fd: int, size: int) -> bytes:
    """A file's bytes, read in one call when it is ``size`` bytes as its stat said.

    Asks for one byte more, so a file that grew meanwhile comes back longer and
    is read again; a short read is continued until the end of the file.
    """
    data = os.read(fd, size + 1)
    while 0 < len(data) < size:
        more = os.read(fd, size + 1 - len(data))
        if not more:
            break
        data += more
    return data


class _Entries:
    """Turns files into entries: those the stat cache vouches for, without reading them."""

    def __init__(self, known: KnownFiles, progress: Progress) -> None:
        self.known = known
        self.progress = progress
        self.learned: dict[str, Known] = {}
        self.kept: list[str] = []  # files the stat cache vouched for: still as it says
        self.reused: set[str] = set()  # objects referenced without being written now

    def skipping(self, full: str) -> None:
        """``full`` is left out of the manifest, with a warning."""

    def vouched(self, full: str, rel: str, st: os.stat_result) -> Entry | None:
        """The entry of a file the stat cache vouches for; ``None`` for any other."""
        found = self.known.matching(full, st)  # in the columns: no ``Known`` per file
        if found is None:
            return None
        digest, chunks = found
        if chunks:
            self.reused.update(d for d, _ in chunks)
        elif st.st_size > chunking.THRESHOLD:
            return None  # stored whole by another chunker setting: would not dedup now
        else:
            self.reused.add(digest)
        self.kept.append(full)
        self.progress.advance(1, st.st_size)  # vouched for: done without reading
        return Entry(rel, FILE, file_mode_bits(st.st_mode), st.st_size, digest, chunks)


class _NeedsReading(Exception):
    """A survey met a file it would have to read (or something a build warns about)."""


class _Survey(_Entries):
    """Entries of files the stat cache vouches for; any other stops the survey."""

    def __init__(self, known: KnownFiles) -> None:
        super().__init__(known, Progress())

    def file_entry(self, full: str, rel: str, st: os.stat_result) -> Entry:
        entry = self.vouched(full, rel, st)
        if entry is None:
            raise _NeedsReading(full)
        return entry

    def skipping(self, full: str) -> None:
        raise _NeedsReading(full)  # the build warns about it, once

    def built(self, manifest: Manifest) -> Built:
        return Built(manifest, self.reused, {}, self.kept)


class _Reader(_Entries):
    """Turns files into entries, reading only what the stat cache cannot vouch for."""

    def __init__(
        self,
        objects: ObjectStore,
        known: KnownFiles,
        stored: set[str],
        progress: Progress,
        quiet: float = 0.0,
    ) -> None:
        super().__init__(known, progress)
        self.objects = objects
        self.quiet = quiet  # seconds a file must be unmodified before it is read
        self.stored = stored
        self.chunker = chunking.Chunker()

    def file_entry(self, full: str, rel: str, st: os.stat_result) -> Entry | None:
        """The entry of one file; ``None`` if it vanished before it could be read."""
        vouched = self.vouched(full, rel, st)
        if vouched is not None:
            return vouched
        try:
            digest, chunks, size, seen = self._read(full)
        except FileNotFoundError:
            return None  # deleted (or renamed away) during the walk: not in the tree now
        self.progress.advance(1, 0)  # its bytes were counted as they were read
        self.learned[full] = known_from_stat(seen, digest, chunks)
        return Entry(rel, FILE, file_mode_bits(seen.st_mode), size, digest, chunks)

    def _read(self, full: str) -> tuple[str, tuple[tuple[str, int], ...], int, os.stat_result]:
        """Store one file's content; re-read it when it changed while being read."""
        for _ in range(READ_ATTEMPTS):
            fd, opened = _open_file(full)
            try:
                before = _quiet_stat(fd, full, self.quiet, opened)
                if before.st_size <= chunking.THRESHOLD:
                    data = _read_small(fd, before.st_size)
                    self.progress.advance(0, len(data))
                    chunks: tuple[tuple[str, int], ...] = ()
                    digest, size = digest_bytes(data), len(data)
                    if digest in self.stored:  # as a chunk is: the previous version has it
                        self.reused.add(digest)
                    else:
                        # A file a checkout copies in the kernel is placed for it (at=0).
                        big = size >= kernelcopy.KERNEL_COPY_MIN
                        self.objects.put(data, digest, at=0 if big else None)
                else:
                    with open(fd, "rb", closefd=False) as stream:
                        digest, chunks, size = self._read_chunked(stream)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if before.st_size == after.st_size == size and before.st_mtime_ns == after.st_mtime_ns:
                return digest, chunks, size, after
        raise SourceChanged(full)

    def _read_chunked(self, stream: BinaryIO) -> tuple[str, tuple[tuple[str, int], ...], int]:
        whole = Hasher()
        chunks = []
        offset = 0
        # Closed on the way out, even by an error: the chunker's thread reads ``stream``.
        with contextlib.closing(self.chunker.chunks(stream)) as pieces:
            for piece in pieces:
                self.progress.advance(0, len(piece))
                whole.update(piece)
                digest = digest_bytes(piece)
                if digest in self.stored:
                    self.reused.add(digest)
                else:
                    # Stored before the next chunk reuses the view (a pack append; a
                    # batch's first few objects are held as copies). ``at``: placed for
                    # a checkout's kernel copies (packs.ALIGN).
                    self.objects.put(piece, digest, at=offset)
                chunks.append((digest, len(piece)))
                offset += len(piece)
        return whole.hexdigest(), tuple(chunks), offset
