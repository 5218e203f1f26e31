"""Checkout: a catalog version → a local file or folder, moving only what differs.

Every file is written to a temporary name in its final folder and renamed into
place, so a reader (or a crash, or a full disk) leaves each file either old or
new, never half-written. A folder that did not exist yet is built whole under a
temporary name and renamed into place. When an existing folder is updated, every
changed file is first written and verified beside its old copy; only then are they
swapped in, so a damaged object or a full disk leaves the folder at its old
version, not a mix of two (at the cost of room for both copies of what changed).
Every byte is verified against its digest before it is written; a damaged object
never reaches the destination.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from . import kernelcopy
from .catalog import Catalog
from .errors import CasError, CorruptObject, InvalidManifest
from .hashing import Hasher, digest_bytes, digest_file
from .localstate import Known, LocalState, known_from_stat
from .manifest import DIR, FILE, SYMLINK, Entry, Manifest
from .objects import LocalObjects, ObjectStore, ReadAhead
from .progress import Progress
from .tree import kind, walk

TEMP_MARK = ".cas-tmp-"
#: Files at least this large are assembled by kernel copies (``kernelcopy``); below it
#: the system calls of a copy and a re-read cost more than passing bytes through Python.
KERNEL_COPY_MIN = 1024 * 1024
#: Temp files and folders of a checkout older than this belong to a dead process.
STALE_TEMP_SECONDS = 3600.0


@dataclass(frozen=True)
class GetResult:
    """What a checkout (or ``Path.get``) did.

    ``bytes_transferred`` counts bytes fetched from the store; files and chunks
    that were already present locally count zero.
    """

    version: int
    files_transferred: int
    bytes_transferred: int


def load_manifest(objects: ObjectStore, digest: str, owner: str = "") -> Manifest:
    """Read, verify and validate a manifest (memoized: manifests are immutable).

    ``owner`` (e.g. ``"root.train:ckpt version 3"``) is named in every error, so a
    damaged or hostile manifest can be traced to the version that points at it.
    """
    try:
        return _load_manifest(objects, digest)
    except CasError as exc:
        if not owner:
            raise
        if isinstance(exc, InvalidManifest):
            raise InvalidManifest(f"manifest {digest} of {owner} is invalid: {exc}") from None
        exc.args = (f"{exc} (the manifest of {owner})",)
        raise


@lru_cache(maxsize=64)
def _load_manifest(objects: ObjectStore, digest: str) -> Manifest:
    return Manifest.decode(objects.read(digest, where="a manifest"))


def checkout(
    objects: ObjectStore,
    catalog: Catalog,
    state: LocalState,
    store_id: str,
    work: str,
    path: str,
    dest: str,
    version: int | None = None,
    overwrite: bool = False,
    inner: str = ".",
    progress: Progress | None = None,
) -> GetResult:
    """Make ``dest`` hold version ``version`` (default latest) of ``(work, path)``.

    ``inner`` selects a file or folder inside the snapshot. Raises
    ``FileExistsError`` when ``dest`` exists and ``overwrite`` is false.
    """
    v = catalog.get(work, path, version)
    label = f"{work}:{path}" + ("" if inner == "." else f"/{inner}") + f" version {v.number}"
    manifest = load_manifest(objects, v.manifest, label).subtree(inner)
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and not overwrite:
        raise FileExistsError(errno.EEXIST, "exists; pass overwrite=True to replace it", dest)
    remove_stale_temps(dest)
    known = state.under(dest)
    writer = _Writer(objects, known, label)
    writer.progress = progress or Progress()
    writer.progress.start(total_bytes=manifest.size)
    with objects.read_ahead(_fetch_order(manifest, dest, known)) as writer.fetch:
        try:
            if manifest.kind == FILE:
                writer.file(dest, manifest.entries[0])
            else:
                writer.tree(dest, manifest)
        finally:
            writer.close()
    state.forget(writer.removed)
    state.remember(writer.learned)
    state.record_checkout(dest, store_id, work, path, v.number, v.manifest)
    return GetResult(v.number, writer.files, writer.bytes)


def _fetch_order(manifest: Manifest, dest: str, known: dict[str, Known]) -> list[tuple[str, int]]:
    """The objects a checkout will read, in the order it writes files: every file
    the stat cache does not vouch for as already in place (for reading ahead)."""
    wanted: list[tuple[str, int]] = []
    for entry in manifest.files:
        full = dest if manifest.kind == FILE else os.path.join(dest, entry.path)
        have = known.get(full)
        if have is not None and have.digest == entry.digest:
            st = _lstat(full)
            if st is not None and have.matches(st):
                continue
        wanted += entry.chunks or ((entry.digest, entry.size),)
    return wanted


def remove_stale_temps(dest: str, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete what killed checkouts of ``dest`` left beside it; return how many.

    A fresh folder is built as ``.<name>.cas-tmp-*`` and a file as
    ``<name>.cas-tmp-*`` next to ``dest``; a kill leaves them behind, possibly
    as large as the checkpoint. They never block a checkout (names are unique),
    so only those older than ``older_than`` seconds are removed: a younger one
    may belong to a checkout still running.
    """
    parent, name = os.path.split(dest)
    prefixes = (f"{name}{TEMP_MARK}", f".{name}{TEMP_MARK}")
    cutoff = time.time() - older_than
    removed = 0
    try:
        found = [e for e in os.scandir(parent) if e.name.startswith(prefixes)]
    except OSError:
        return 0
    for entry in found:
        try:
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                for dirpath, dirs, _ in os.walk(entry.path):
                    for d in dirs:  # folders may have read-only modes from a manifest
                        os.chmod(os.path.join(dirpath, d), 0o700)
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue  # best effort: a leftover costs space, never correctness
    return removed


def _remove(full: str) -> None:
    # NotADirectoryError: an ancestor was already replaced by a file.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


class _Writer:
    def __init__(self, objects: ObjectStore, known: dict[str, Known], label: str) -> None:
        self.objects = objects
        self.fetch: ObjectStore | ReadAhead = objects  # reads content: ahead when it can
        self.known = known
        self.label = label
        self.files = 0
        self.bytes = 0
        self.learned: dict[str, Known] = {}
        self.removed: list[str] = []
        # digest -> (file, offset, size): content already on this disk, usable instead of a fetch.
        self.local: dict[str, tuple[str, int, int]] = {}
        self._sources: dict[str, BinaryIO] = {}  # open local files that chunks are read from
        self._fetched: dict[str, int] = {}  # staged temp file -> bytes fetched for it
        self._modes: list[tuple[str, Entry]] = []  # unchanged files whose mode is due to change

    # -- whole destinations -----------------------------------------------
    def file(self, dest: str, entry: Entry) -> None:
        current = _lstat(dest)
        if current is not None and kind(current) == "dir":
            _remove(dest)
            current = None
        elif current is not None:
            # The old file stays readable until the new one replaces it: reuse its chunks.
            self._index_local(os.path.dirname(dest), {os.path.basename(dest): current})
        if not self._unchanged(dest, entry, current):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            self._write(dest, entry, replace=True)

    def tree(self, dest: str, manifest: Manifest) -> None:
        current = _lstat(dest)
        if current is not None and kind(current) != "dir":
            _remove(dest)
            current = None
        if current is None:
            self._fresh_tree(dest, manifest)
        else:
            self._update_tree(dest, manifest)

    def _fresh_tree(self, dest: str, manifest: Manifest) -> None:
        parent, name = os.path.split(dest)
        os.makedirs(parent, exist_ok=True)
        temp = os.path.join(parent, f".{name}{TEMP_MARK}{secrets.token_hex(6)}")
        os.mkdir(temp, 0o700)
        try:
            for entry in manifest.entries:
                full = os.path.join(temp, entry.path)
                if entry.type == DIR:
                    os.mkdir(full, 0o700)
                elif entry.type == SYMLINK:
                    os.symlink(entry.target, full)
                else:
                    self._write(full, entry, replace=False, final=os.path.join(dest, entry.path))
            _apply_dir_modes(temp, manifest)
            os.rename(temp, dest)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            self.learned.clear()
            raise

    def _update_tree(self, dest: str, manifest: Manifest) -> None:
        current = walk(dest)
        self._index_local(dest, current)
        for rel, st in current.items():
            # Folders we must write into may be read-only; their modes are reset at the end.
            if kind(st) == "dir" and st.st_mode & 0o700 != 0o700:
                os.chmod(os.path.join(dest, rel), stat.S_IMODE(st.st_mode) | 0o700)
        wanted = manifest.by_path()
        done, staged = self._stage_files(dest, manifest, current)
        try:
            for full, entry in self._modes:
                self._chmod(full, entry)
            for entry in manifest.entries:
                full = os.path.join(dest, entry.path)
                have = current.get(entry.path)
                have_kind = kind(have) if have is not None else None
                if entry.type == DIR:
                    if have_kind != "dir":
                        if have_kind is not None:
                            _remove(full)
                        os.mkdir(full, 0o700)
                elif entry.type == SYMLINK:
                    if have_kind == "symlink" and os.readlink(full) == entry.target:
                        continue
                    if have_kind == "dir":
                        _remove(full)
                    temp = f"{full}{TEMP_MARK}{secrets.token_hex(6)}"
                    os.symlink(entry.target, temp)
                    os.replace(temp, full)
                elif entry.path not in done:
                    if have_kind == "dir":
                        _remove(full)
                    if entry.path in staged:
                        self._place(staged.pop(entry.path), full, entry)
                    else:
                        self._write(full, entry, replace=True)
        finally:
            _discard(staged.values())
        for rel in sorted(current, reverse=True):  # children before their folders
            if rel not in wanted:
                full = os.path.join(dest, rel)
                _remove(full)
                self.removed.append(full)
        _apply_dir_modes(dest, manifest)

    def _stage_files(
        self, dest: str, manifest: Manifest, current: dict[str, os.stat_result]
    ) -> tuple[set[str], dict[str, str]]:
        """Write every changed file that has a folder already to a verified temp name.

        Nothing in ``dest`` is replaced until all of them are written, so a damaged
        or missing object, or a full disk, leaves ``dest`` wholly at its old version
        rather than a mix of two. Returns the unchanged paths and ``{path: temp}``.
        """
        done: set[str] = set()
        staged: dict[str, str] = {}
        try:
            for entry in manifest.files:
                full = os.path.join(dest, entry.path)
                have = current.get(entry.path)
                # A mode-only change also waits: the folder stays wholly old if staging fails.
                if have is not None and self._unchanged(full, entry, have, self._modes):
                    done.add(entry.path)
                    continue
                parent = posixpath.dirname(entry.path)
                # Only into folders that exist now (never through a symlink): others are
                # made, and their files written, in the swap that follows.
                if not parent or (parent in current and kind(current[parent]) == "dir"):
                    staged[entry.path] = self._stage(full, entry)
        except BaseException:
            _discard(staged.values())
            raise
        return done, staged

    # -- single files -----------------------------------------------------
    def _unchanged(
        self, full: str, entry: Entry, st: os.stat_result | None, modes: list | None = None
    ) -> bool:
        """Whether ``full`` already holds ``entry``'s bytes; fixes (or, given ``modes``,
        queues there) a differing mode."""
        if st is None or kind(st) != "file":
            return False
        known = self.known.get(full)
        if known is not None and known.matches(st):
            if known.digest != entry.digest:
                return False
        elif st.st_size == entry.size and digest_file(full) == entry.digest:
            # Not vouched for by the stat cache (new to it, or written moments ago):
            # reading the local copy is still cheaper than fetching from the store.
            self.learned[full] = known_from_stat(st, entry.digest, entry.chunks)
        else:
            return False
        if stat.S_IMODE(st.st_mode) != entry.mode:
            if modes is not None:
                modes.append((full, entry))
            else:
                self._chmod(full, entry)
        self.progress.advance(1, entry.size)  # already here: done without writing
        return True

    def _chmod(self, full: str, entry: Entry) -> None:
        os.chmod(full, entry.mode)
        self.learned[full] = known_from_stat(os.lstat(full), entry.digest, entry.chunks)

    def _write(self, full: str, entry: Entry, replace: bool, final: str | None = None) -> None:
        """Write ``entry`` at ``full`` (via a temp name when ``replace``), verified."""
        if replace:
            self._place(self._stage(full, entry), full, entry)
        else:
            st, fetched = self._fill(full, entry, full)
            self._count(final or full, st, entry, fetched)

    def _stage(self, full: str, entry: Entry) -> str:
        """Write ``entry``, verified, to a new temp name beside ``full``; return the name."""
        temp = f"{full}{TEMP_MARK}{secrets.token_hex(6)}"
        self._fetched[temp] = self._fill(temp, entry, full)[1]
        return temp

    def _place(self, temp: str, full: str, entry: Entry) -> None:
        """Rename a staged temp file over ``full``."""
        fetched = self._fetched.pop(temp, 0)
        try:
            os.replace(temp, full)
        except OSError as exc:
            _discard([temp])
            raise OSError(exc.errno, f"{exc.strerror} while writing", full) from exc
        self._count(full, os.lstat(full), entry, fetched)  # lstat: a rename changes ctime

    def _fill(self, target: str, entry: Entry, full: str) -> tuple[os.stat_result, int]:
        """Create ``target`` with the content of ``entry``; errors name ``full``."""
        fetched = 0
        try:
            # Read-write: the kernel-copy path re-reads what it wrote to verify it.
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as out:
                copied = self._copy_in_kernel(out.fileno(), entry)
                if copied is None:
                    os.ftruncate(out.fileno(), 0)
                    fetched = self._copy_verified(out, entry)
                else:
                    fetched = copied
                os.fchmod(out.fileno(), entry.mode)
                out.flush()
                st = os.fstat(out.fileno())
        except BaseException as exc:
            _discard([target])
            if isinstance(exc, OSError) and not isinstance(exc, CasError):
                raise OSError(exc.errno, f"{exc.strerror} while writing", full) from exc
            raise
        return st, fetched

    def _copy_verified(self, out: BinaryIO, entry: Entry) -> int:
        """Write ``entry`` through Python, verifying every piece; return bytes fetched."""
        fetched = 0
        whole = Hasher() if entry.chunks else None
        for digest, size in entry.chunks or ((entry.digest, entry.size),):
            data = self._local_copy(digest, size)
            if data is None:
                data = self.fetch.read(digest, where=f"{self.label}: {entry.path}")
                fetched += len(data)
            out.write(data)
            self.progress.advance(0, len(data))
            if whole is not None:
                whole.update(data)
        if whole is not None and (got := whole.hexdigest()) != entry.digest:
            raise CorruptObject(entry.digest, got, f"{self.label}: {entry.path}")
        return fetched

    def _copy_in_kernel(self, fd: int, entry: Entry) -> int | None:
        """Assemble a large ``entry`` by kernel copies, then verify it by hashing it once.

        Returns the bytes fetched from the store, or ``None`` when this path does not
        apply or the result does not verify (a damaged object, a local file changed
        since it was indexed): the caller then rebuilds the file piece by piece through
        ``_copy_verified``, which names the damaged object or fetches the stored chunk.
        Verifying the whole file is as strong as verifying each piece (one 128-bit
        digest over the same bytes) and costs one read instead of two hashes and a write.
        """
        if entry.size < KERNEL_COPY_MIN or not isinstance(self.objects, LocalObjects):
            return None
        pieces = entry.chunks or ((entry.digest, entry.size),)
        fetched = offset = 0
        for digest, size in pieces:
            where = self.local.get(digest)
            try:
                if where is not None:
                    copied = kernelcopy.copy_range(
                        self._source(where[0]), fd, size, where[1], offset
                    )
                else:
                    with open(self.objects.path(digest), "rb") as obj:
                        whole_file = len(pieces) == 1
                        if whole_file and kernelcopy.clone(obj.fileno(), fd):
                            copied = os.fstat(fd).st_size
                        else:
                            copied = kernelcopy.copy_range(obj.fileno(), fd, size, 0, offset)
                    fetched += size
            except FileNotFoundError:
                return None  # a missing object: the verified path raises MissingObject
            if copied != size:
                return None
            offset += size
            # (A file that then fails to verify is written again and counted twice: rare.)
            self.progress.advance(0, size)
        got, length = kernelcopy.digest_fd(fd, entry.size)
        if got != entry.digest or length != entry.size or os.fstat(fd).st_size != entry.size:
            return None
        return fetched

    def _source(self, full: str) -> int:
        """An open descriptor of the local file ``full`` (kept open for its other chunks)."""
        stream = self._sources.get(full)
        if stream is None:
            stream = self._sources[full] = open(full, "rb")  # noqa: SIM115 - closed in close()
        return stream.fileno()

    progress: Progress = Progress()

    def _count(self, name: str, st: os.stat_result, entry: Entry, fetched: int) -> None:
        self.progress.advance(1, 0)  # its bytes were counted as they were written
        self.files += 1
        self.bytes += fetched
        self.learned[name] = known_from_stat(st, entry.digest, entry.chunks)

    # -- content already on this disk ---------------------------------------
    def _index_local(self, root: str, found: dict[str, os.stat_result]) -> None:
        for rel, st in found.items():
            full = os.path.join(root, rel)
            known = self.known.get(full)
            # describes(), not matches(): every local copy is re-hashed before use, so a
            # file written moments ago (inside the racy window) still serves its chunks.
            if known is None or not known.describes(st):
                continue
            if known.chunks:
                offset = 0
                for digest, size in known.chunks:
                    self.local.setdefault(digest, (full, offset, size))
                    offset += size
            else:
                self.local.setdefault(known.digest, (full, 0, known.size))

    def close(self) -> None:
        for stream in self._sources.values():
            stream.close()
        self._sources.clear()

    def _local_copy(self, digest: str, size: int) -> bytes | None:
        where = self.local.get(digest)
        if where is None:
            return None
        full, offset, length = where
        try:
            stream = self._sources.get(full)
            if stream is None:
                # Kept open: a big file lends hundreds of chunks, one open serves them all.
                stream = self._sources[full] = open(full, "rb")  # noqa: SIM115
            stream.seek(offset)
            data = stream.read(length)
        except OSError:
            return None
        # The file may have been replaced since it was indexed: trust only verified bytes.
        return data if len(data) == size and digest_bytes(data) == digest else None


def _discard(temps) -> None:
    for temp in list(temps):
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _lstat(full: str) -> os.stat_result | None:
    try:
        return os.lstat(full)
    except FileNotFoundError:
        return None


def _apply_dir_modes(root: str, manifest: Manifest) -> None:
    for entry in reversed(manifest.entries):  # deepest first, so parents stay enterable
        if entry.type == DIR:
            os.chmod(os.path.join(root, entry.path), entry.mode)
