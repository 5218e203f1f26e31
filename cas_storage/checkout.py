"""Checkout: a catalog version → a local file or folder, moving only what differs.

Split as dvc-data does: ``plan`` compares the manifest with what is at the
destination (the stat cache vouches for files, others are hashed) and says what
to write, re-mode, create and remove; ``apply`` carries the plan out.

* **One checkout per destination at a time**: ``dest_lock`` holds an advisory
  lock (``flock``, released by the kernel even on ``kill -9``) on the hidden
  sibling ``.<name>.cas-lock``; a second checkout waits (bounded), then fails
  with a clear ``TimeoutError``.
* **Staging outside the user's folder**: files are written, verified, into the
  hidden sibling ``.<name>.cas-staging-<random>`` (same filesystem, so a rename
  moves them in), never among the user's files; a snapshot of the destination
  never sees them. A staging folder left by a killed checkout is removed by the
  next checkout of that destination (it holds the lock, so no other one runs).
* **Old or new, never half**: every changed file is staged and verified before
  the first one is swapped in, so a damaged object or a full disk leaves the
  destination at its old version; a fresh folder is built whole and renamed
  into place. Each swap is a rename, so every file is whole: old or new.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import secrets
import shutil
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from . import kernelcopy
from .catalog import Catalog
from .errors import CasError, CorruptObject, InvalidManifest
from .hashing import Hasher, digest_bytes, digest_file
from .kernelcopy import KERNEL_COPY_MIN
from .localstate import Known, KnownFiles, LocalState, identity, known_from_stat
from .manifest import DIR, FILE, SYMLINK, Entry, Manifest
from .objects import LocalObjects, ObjectStore, ReadAhead
from .progress import Progress
from .stamps import held_as_stamped, stamp_of_checkout, wait_out_racy_window
from .tree import LOCK_SUFFIX, STAGING_MARK, is_ours, kind, paused_gc, walk

#: Neighbouring pieces of one file are copied by one kernel copy of at most this size.
COPY_RUN = 4 * 2**20
#: Leftovers of the old layout (``NAME.cas-tmp-*`` beside files) older than this are removed.
STALE_TEMP_SECONDS = 3600.0
OLD_TEMP_MARK = ".cas-tmp-"


@dataclass(frozen=True)
class GetResult:
    """What a checkout (or ``Path.get``) did.

    ``bytes_transferred`` counts bytes fetched from the store; files and chunks
    that were already present locally count zero.
    """

    version: int
    files_transferred: int
    bytes_transferred: int


def load_manifest(
    objects: ObjectStore, digest: str, owner: str = "", validated_before: bool = False
) -> Manifest:
    """Read, verify and validate a manifest (memoized: manifests are immutable).

    ``owner`` (e.g. ``"root.train:ckpt version 3"``) is named in every error, so a
    damaged or hostile manifest can be traced to the version that points at it.
    ``validated_before``: this machine has validated this very manifest already (a
    destination was checked out to it: ``LocalState.checked_out``). Its bytes are
    verified against the digest as they are read, so validating them again could only
    give the same answer: ~0.4 s per 100,000 entries that an unchanged re-get in a new
    process (every ``cas get``) need not pay.
    """
    with _naming_owner(digest, owner):
        return _load_manifest(objects, digest, validated_before)


def manifest_kind(objects: ObjectStore, digest: str, owner: str = "") -> str:
    """``load_manifest(...).kind`` without decoding an entry (``Manifest.kind_in``):
    the manifest is read and verified, ~1 ms where a decode of 100,000 entries takes
    ~0.5 s. Errors name ``owner`` as ``load_manifest``'s do."""
    with _naming_owner(digest, owner):
        return Manifest.kind_in(objects.read(digest, where="a manifest"))


@contextlib.contextmanager
def _naming_owner(digest: str, owner: str) -> Iterator[None]:
    """Errors about manifest ``digest`` name the version that points at it."""
    try:
        yield
    except CasError as exc:
        if not owner:
            raise
        if isinstance(exc, InvalidManifest):
            raise InvalidManifest(f"manifest {digest} of {owner} is invalid: {exc}") from None
        exc.args = (f"{exc} (the manifest of {owner})",)
        raise


#: Manifests decoded in this process, by (store, digest), and whether each is validated
#: yet: each is decoded once and validated at most once.
_MANIFESTS: OrderedDict[tuple[ObjectStore, str], tuple[Manifest, bool]] = OrderedDict()
MANIFESTS_KEPT = 64
_manifests_lock = threading.Lock()


def remember_manifest(
    objects: ObjectStore, digest: str, manifest: Manifest, valid: bool = True
) -> None:
    """Note ``manifest`` as ``digest``'s (most recently used), and whether it is valid.

    A snapshot notes the manifest it built and stored: made from a walk and our own
    hashing, it needs no validation (``Manifest.build``), and a get of it in this
    process then decodes nothing (~0.05 s per 20,000 files).
    """
    key = (objects, digest)
    with _manifests_lock:
        _MANIFESTS[key] = (manifest, valid)
        _MANIFESTS.move_to_end(key)
        while len(_MANIFESTS) > MANIFESTS_KEPT:
            _MANIFESTS.popitem(last=False)


def _load_manifest(objects: ObjectStore, digest: str, validated_before: bool) -> Manifest:
    key = (objects, digest)
    with _manifests_lock:
        found = _MANIFESTS.get(key)
    if found is None:
        manifest = Manifest.decode(objects.read(digest, where="a manifest"), validate=False)
        valid = False
    else:
        manifest, valid = found
    if not (valid or validated_before):
        manifest.validate()
        valid = True
    remember_manifest(objects, digest, manifest, valid)
    return manifest


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
    label = v.label(inner)
    dest = os.path.abspath(dest)
    validated_before = state.checked_out(v.manifest)
    manifest = load_manifest(objects, v.manifest, label, validated_before).subtree(inner)
    if os.path.lexists(dest) and not overwrite:
        raise FileExistsError(errno.EEXIST, "exists; pass overwrite=True to replace it", dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with dest_lock(dest):
        # Checked again under the lock: another checkout may have made it meanwhile.
        if os.path.lexists(dest) and not overwrite:
            raise FileExistsError(errno.EEXIST, "exists; pass overwrite=True to replace it", dest)
        remove_leftovers(dest)
        known = state.under(dest)
        writer = _Writer(objects, known, label, progress, manifest.size)
        fetches = objects.read_ahead(_fetch_order(objects, manifest, dest, known))
        with _staging(dest) as staging, fetches as writer.fetch:
            try:
                with paused_gc():  # 100k files: collections find no cycles, only cost
                    apply(plan(dest, manifest, writer), writer, staging)
            finally:
                writer.close()
        whole = inner == "." and manifest.kind == DIR
        if whole:  # so the record and the stamp vouch for what was just written
            wait_out_racy_window()
        tree = state.record_tree(dest, known, writer.kept, writer.learned)
        state.record_checkout(dest, store_id, work, path, v.number, v.manifest)
        if whole:
            with paused_gc():
                state.record_stamp(dest, stamp_of_checkout(dest, manifest, v.manifest, tree))
    return GetResult(v.number, writer.files, writer.bytes)


def in_place(
    objects: ObjectStore,
    catalog: Catalog,
    state: LocalState,
    store_id: str,
    work: str,
    path: str,
    dest: str,
    version: int | None = None,
    inner: str = ".",
    progress: Progress | None = None,
) -> GetResult | None:
    """The checkout of a ``dest`` that already holds the version exactly, without the
    store's lease; ``None`` when anything is to be written, re-moded or removed.

    Such a checkout reads no content object (the manifest at most, verified against its
    digest), so gc can take nothing from under it: on S3 it is one listing, where the
    lease alone costs three requests. Tried only for a ``dest`` this machine last
    checked out to that very manifest (``LocalState.checkout_of``), so a new version
    costs one listing more and no walk. Whether anything differs is decided by
    ``plan``, as for every checkout, under ``dest``'s lock; when something does, the
    caller runs ``checkout`` under the lease, which plans again (the stat cache then
    holds what this one learned, so no file is hashed twice).
    """
    dest = os.path.abspath(dest)
    held = state.checkout_of(dest, store_id)
    if held is None or not os.path.lexists(dest):
        return None
    v = catalog.get(work, path, version)
    if v.manifest != held:
        return None
    label = v.label(inner)
    with dest_lock(dest):
        remove_leftovers(dest)
        known = state.under(dest)
        with paused_gc():  # as for every checkout: 100k files, no cycles to find
            if inner == "." and _held_since_stamp(state, dest, v.manifest, known):
                if progress is not None:
                    progress.start(total_bytes=v.bytes)
                return GetResult(v.number, 0, 0)  # not even the manifest read
            try:  # validated when dest was checked out to it (that is what ``held`` says)
                manifest = load_manifest(objects, v.manifest, label, True).subtree(inner)
            except (CasError, OSError):
                return None  # e.g. freed by gc since it was listed: the full path says why
            if held_as_recorded(dest, manifest, known):
                if progress is not None:
                    progress.start(total_bytes=manifest.size)
                if inner == ".":  # the next one then needs no listing and no manifest
                    state.record_stamp(
                        dest, stamp_of_checkout(dest, manifest, v.manifest, known.record)
                    )
                return GetResult(v.number, 0, 0)  # every file as recorded: nothing to learn
            writer = _Writer(objects, known, label, progress, manifest.size)
            same = plan(dest, manifest, writer).changes_nothing()
        state.record_tree(dest, known, writer.kept, writer.learned)
    return GetResult(v.number, 0, 0) if same else None


def _held_since_stamp(state: LocalState, dest: str, digest: str, known: KnownFiles) -> bool:
    """Whether folder ``dest`` (its stat-cache record ``known``) still holds manifest
    ``digest`` as this machine's last checkout of it left it (``stamps.held_as_stamped``):
    one ``lstat`` per file and folder. Asked under ``dest``'s lock."""
    stamp = state.stamp_of(dest)
    return (
        stamp is not None
        and stamp.by == "checkout"
        and stamp.manifest == digest
        and held_as_stamped(dest, known, stamp)
    )


def held_as_recorded(dest: str, manifest: Manifest, known: KnownFiles) -> bool:
    """Whether folder ``dest`` holds ``manifest`` exactly, by its stat-cache record alone.

    True when every file has the stat its record vouches for (``KnownFiles.identities``:
    the entry's digest and mode), every folder its mode, every link its target, and
    nothing else is there. ``plan`` would then change nothing and learn nothing; this
    decides it with one ``lstat`` and one tuple comparison per file, about half the cost
    of a plan (whose walk keeps every stat). False means only "cannot tell this way":
    a file not vouched for, an error, a difference, which ``plan`` then sorts out.
    """
    if manifest.kind != DIR or known.root != dest:
        return False
    files = known.identities(dest, manifest.files)
    if files is None:
        return False
    folders = {e.path: stat.S_IFDIR | e.mode for e in manifest.entries if e.type == DIR}
    links = {e.path: e.target for e in manifest.entries if e.type == SYMLINK}
    seen = 0
    pending = [("", dest)]
    try:
        while pending:
            rel_dir, abs_dir = pending.pop()
            # By descriptor: each lstat then resolves one name, not the whole path.
            fd = os.open(abs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                for name in os.listdir(fd):
                    if name[0] == "." and is_ours(name):
                        continue  # a nested checkout's lock or staging, as ``walk`` skips
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    want = files.get(rel)
                    if want is not None:
                        if identity(st) != want:
                            return False
                    elif rel in folders:
                        if st.st_mode != folders[rel]:
                            return False
                        pending.append((rel, f"{abs_dir}/{name}"))
                    elif rel not in links or not (
                        stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=fd) == links[rel]
                    ):
                        return False  # not in the manifest, or not the link it names
                    seen += 1
            finally:
                os.close(fd)
    except OSError:
        return False
    return seen == len(files) + len(folders) + len(links)


def _fetch_order(
    objects: ObjectStore, manifest: Manifest, dest: str, known: Mapping[str, Known]
) -> Iterator[tuple[str, int]]:
    """The objects a checkout will read, in the order it writes files (for reading
    ahead): those of every file the stat cache does not take to be in place already,
    and on a local store not assembled by kernel copies. On an object store a fetch
    for nothing costs a request, so the stat cache's word is checked by ``lstat``;
    locally a wrong guess costs one direct read, and no file is ``lstat``-ed for it.
    """
    local = isinstance(objects, LocalObjects)
    for entry in manifest.files:
        if local and entry.size >= KERNEL_COPY_MIN:
            continue  # assembled by kernel copies, never read through the read-ahead
        full = dest if manifest.kind == FILE else f"{dest}/{entry.path}"
        have = known.get(full)
        if have is not None and have.digest == entry.digest:
            if local:
                continue  # likely in place; if not, it is read directly, at no loss
            st = _lstat(full)
            # describes(), not matches(): a file written moments ago is likely still
            # in place (it is verified before being kept); if not, it is read directly.
            if st is not None and have.describes(st):
                continue
        yield from entry.chunks or ((entry.digest, entry.size),)


# -- one checkout per destination; staging beside it ------------------------------
def _sibling(dest: str, suffix: str) -> str:
    parent, name = os.path.split(dest)
    return os.path.join(parent, f".{name}{suffix}")


def lock_wait_seconds() -> float:
    """How long a checkout waits for another one into the same destination."""
    return float(os.environ.get("CAS_LOCK_WAIT", "600"))


@contextlib.contextmanager
def dest_lock(dest: str) -> Iterator[None]:
    """Hold the destination's lock (``.<name>.cas-lock``, ``flock``), bounded wait.

    The lock file is removed on release; a waiter that then wins the lock of a
    removed file notices (its inode is no longer the path's) and starts over.
    """
    lock_path = _sibling(dest, LOCK_SUFFIX)
    deadline = time.monotonic() + lock_wait_seconds()
    delay = 0.002
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"another checkout into {dest} held its lock {lock_path} for over "
                    f"{lock_wait_seconds():g} s (set CAS_LOCK_WAIT to wait longer)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it as we opened it: take the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def _staging(dest: str) -> Iterator[str]:
    """A fresh staging folder beside ``dest``, removed afterwards whatever happens."""
    folder = _sibling(dest, STAGING_MARK + secrets.token_hex(6))
    os.mkdir(folder, 0o700)
    try:
        yield folder
    finally:
        _remove_tree(folder)


def remove_leftovers(dest: str, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete what killed checkouts of ``dest`` left beside it; return how many.

    Run while holding ``dest``'s lock: every staging folder of ``dest`` then
    belongs to a dead checkout and goes at once. Temp names of the old layout
    (``NAME.cas-tmp-*``) go once older than ``older_than`` seconds.
    """
    parent, name = os.path.split(dest)
    staging = f".{name}{STAGING_MARK}"
    old = (f"{name}{OLD_TEMP_MARK}", f".{name}{OLD_TEMP_MARK}")
    cutoff = time.time() - older_than
    removed = 0
    try:
        found = [e for e in os.scandir(parent) if e.name.startswith((staging, *old))]
    except OSError:
        return 0
    for entry in found:
        try:
            fresh = entry.stat(follow_symlinks=False).st_mtime > cutoff
            if fresh and not entry.name.startswith(staging):
                continue
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue  # best effort: a leftover costs space, never correctness
    return removed


remove_stale_temps = remove_leftovers  # the earlier name


def _remove_tree(folder: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        for dirpath, dirs, _ in os.walk(folder):
            for d in dirs:  # folders may have read-only modes from a manifest
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, d), 0o700)
        shutil.rmtree(folder, ignore_errors=True)


def _remove(full: str) -> None:
    # NotADirectoryError: an ancestor was already replaced by a file.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if os.path.isdir(full) and not os.path.islink(full):
            _remove_tree(full)
        else:
            os.unlink(full)


# -- plan: what differs -------------------------------------------------------------
@dataclass
class Plan:
    """What a checkout changes at ``dest``.

    ``current`` is what is there now (``None``: nothing, or the other kind, which
    is removed first — the manifest is then built whole in staging). ``write``
    lists the files whose content must be written; ``chmod`` files that only
    need their mode set; ``remove`` paths there that the manifest lacks.
    """

    dest: str
    manifest: Manifest
    current: dict[str, os.stat_result] | None
    replace_top: bool = False
    write: list[Entry] = field(default_factory=list)
    chmod: list[Entry] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    def changes_nothing(self) -> bool:
        """Whether ``apply`` would leave ``dest`` as it is: no file to write, re-mode or
        remove (the plan's lists), and every folder and link already as ``apply``
        would make it (its kind, a folder's mode, a link's target)."""
        if self.current is None or self.write or self.chmod or self.remove:
            return False
        for entry in self.manifest.entries:
            if entry.type == FILE:
                continue  # planned above
            have = self.current.get(entry.path)
            if have is None or kind(have) != entry.type:
                return False
            if entry.type == DIR and stat.S_IMODE(have.st_mode) != entry.mode:
                return False
            if entry.type == SYMLINK:
                try:
                    if os.readlink(_full(self.dest, entry.path)) != entry.target:
                        return False
                except OSError:
                    return False
        return True


def plan(dest: str, manifest: Manifest, writer: _Writer) -> Plan:
    """Compare ``manifest`` with ``dest`` (stat cache first, hashing what it cannot vouch for)."""
    top = _lstat(dest)
    want_dir = manifest.kind == DIR
    if top is None or (kind(top) == "dir") != want_dir:
        return Plan(dest, manifest, None, replace_top=top is not None, write=list(manifest.files))
    if not want_dir:
        current = {".": top}
        writer.index_later(os.path.dirname(dest), {os.path.basename(dest): top})
    else:
        current = walk(dest, ordered=False)  # looked up by path; removals sorted below
        writer.index_later(dest, current)
    out = Plan(dest, manifest, current)
    prefix = dest + "/"  # os.path.join per file costs more than the rest of the check
    for entry in manifest.files:
        full = dest if entry.path == "." else prefix + entry.path
        have = current.get(entry.path)
        if have is None or not writer._unchanged(full, entry, have):
            out.write.append(entry)
        elif stat.S_IMODE(have.st_mode) != entry.mode:
            out.chmod.append(entry)
    if want_dir:
        wanted = manifest.by_path()
        out.remove = [rel for rel in sorted(current, reverse=True) if rel not in wanted]
    return out


# -- apply: stage, verify, swap in --------------------------------------------------
def apply(p: Plan, writer: _Writer, staging: str) -> None:
    """Carry out ``p``, staging every written file in ``staging`` first."""
    if p.current is None:
        _apply_fresh(p, writer, staging)
    else:
        _apply_update(p, writer, staging)


def _apply_fresh(p: Plan, writer: _Writer, staging: str) -> None:
    """Build the whole file or folder in staging, then rename it into place."""
    built = os.path.join(staging, "tree")
    if p.manifest.kind == FILE:
        writer.write_file(built, p.manifest.entries[0], final=p.dest)
    else:
        os.mkdir(built, 0o700)
        for entry in p.manifest.entries:  # validated relative paths: joined as strings
            full = f"{built}/{entry.path}"
            if entry.type == DIR:
                os.mkdir(full, 0o700)
            elif entry.type == SYMLINK:
                os.symlink(entry.target, full)
            else:
                writer.write_file(full, entry, final=f"{p.dest}/{entry.path}")
        _apply_dir_modes(built, p.manifest)
    if p.replace_top:
        _remove(p.dest)
    os.rename(built, p.dest)
    if p.manifest.kind == FILE:  # the rename changed the file's ctime: record it anew
        entry = p.manifest.entries[0]
        writer.learned[p.dest] = known_from_stat(os.lstat(p.dest), entry.digest, entry.chunks)


def _apply_update(p: Plan, writer: _Writer, staging: str) -> None:
    assert p.current is not None
    current, dest = p.current, p.dest
    for rel, st in current.items():
        # Folders we must write into may be read-only; their modes are reset at the end.
        if rel != "." and kind(st) == "dir" and st.st_mode & 0o700 != 0o700:
            os.chmod(os.path.join(dest, rel), stat.S_IMODE(st.st_mode) | 0o700)
    staged: dict[str, str] = {}
    for i, entry in enumerate(p.write):  # every change verified before the first swap
        staged[entry.path] = os.path.join(staging, str(i))
        writer.write_file(staged[entry.path], entry, final=_full(dest, entry.path))
    for entry in p.chmod:
        writer.chmod(_full(dest, entry.path), entry)
    for entry in p.manifest.entries:
        if entry.type == FILE and entry.path not in staged:
            continue  # unchanged (or only its mode, set above)
        full = _full(dest, entry.path)
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
            link = os.path.join(staging, f"link-{len(staged)}-{secrets.token_hex(3)}")
            os.symlink(entry.target, link)
            os.replace(link, full)
        elif entry.path in staged:
            if have_kind == "dir":
                _remove(full)
            writer.place(staged.pop(entry.path), full)
    for rel in p.remove:  # children before their folders
        full = os.path.join(dest, rel)
        _remove(full)
    if p.manifest.kind == DIR:
        _apply_dir_modes(dest, p.manifest)


def _full(dest: str, rel: str) -> str:
    return dest if rel == "." else os.path.join(dest, rel)


class _Writer:
    """Writes verified files and keeps the counts and the stat-cache records."""

    def __init__(
        self,
        objects: ObjectStore,
        known: KnownFiles,
        label: str,
        progress: Progress | None,
        total_bytes: int,
    ) -> None:
        self.objects = objects
        self.progress = progress or Progress()
        self.progress.start(total_bytes=total_bytes)
        self.fetch: ObjectStore | ReadAhead = objects  # reads content: ahead when it can
        self.known = known
        self.label = label
        self.files = 0
        self.bytes = 0
        self.learned: dict[str, Known] = {}
        self.kept: list[str] = []  # files the stat cache vouched for: still as it says
        # digest -> (file, offset, size): content already on this disk, usable instead of a
        # fetch. Indexed on first use (``local``): an unchanged checkout never needs it.
        self._local: dict[str, tuple[str, int, int]] = {}
        self._to_index: list[tuple[str, dict[str, os.stat_result]]] = []
        self._sources: dict[str, BinaryIO] = {}  # open local files that chunks are read from
        self._staged: dict[str, tuple[Entry, int]] = {}  # staged file -> (entry, bytes fetched)
        self._hash_buf: bytearray | None = None

    def write_file(self, target: str, entry: Entry, final: str) -> None:
        """Write ``entry``, verified, at the staging path ``target`` (bound for ``final``)."""
        st, fetched = self._fill(target, entry, final)
        self._staged[target] = (entry, fetched)
        self._count(final, st, entry, fetched)

    def place(self, staged: str, full: str) -> None:
        """Rename a staged file over ``full`` (one rename: readers see old or new)."""
        entry, _ = self._staged.pop(staged)
        try:
            os.replace(staged, full)
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror} while writing", full) from exc
        # lstat: a rename changes ctime, which the stat cache records.
        self.learned[full] = known_from_stat(os.lstat(full), entry.digest, entry.chunks)

    def chmod(self, full: str, entry: Entry) -> None:
        os.chmod(full, entry.mode)
        self.learned[full] = known_from_stat(os.lstat(full), entry.digest, entry.chunks)

    # -- single files -----------------------------------------------------
    def _unchanged(self, full: str, entry: Entry, st: os.stat_result) -> bool:
        """Whether ``full`` already holds ``entry``'s bytes (its mode aside)."""
        if not stat.S_ISREG(st.st_mode):
            return False
        vouched = self.known.matching_digest(full, st)
        if vouched is not None:
            if vouched != entry.digest:
                return False
            self.kept.append(full)
        elif st.st_size == entry.size and digest_file(full) == entry.digest:
            # Not vouched for by the stat cache (new to it, or written moments ago):
            # reading the local copy is still cheaper than fetching from the store.
            self.learned[full] = known_from_stat(st, entry.digest, entry.chunks)
        else:
            return False
        self.progress.advance(1, entry.size)  # already here: done without writing
        return True

    def _fill(self, target: str, entry: Entry, full: str) -> tuple[os.stat_result, int]:
        """Create ``target`` with the content of ``entry``, verified; errors name ``full``.

        The one per-file copy of a checkout: kernel copies for large files, else
        piece by piece through Python. Returns the stat and the bytes fetched.
        """
        fetched = 0
        try:
            # Read-write: the kernel-copy path re-reads what it wrote to verify it.
            # Unbuffered: pieces are written whole, and a buffered file object per file
            # cost a tenth of a 20,000-file get. Created with its mode: the staging
            # folder is private.
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, entry.mode)
            try:
                copied = None
                if entry.size >= KERNEL_COPY_MIN and isinstance(self.objects, LocalObjects):
                    copied = self._copy_in_kernel(fd, entry)
                    if copied is None:  # did not verify: start again, piece by piece
                        os.ftruncate(fd, 0)
                        os.lseek(fd, 0, os.SEEK_SET)
                fetched = self._copy_verified(fd, entry) if copied is None else copied
                st = os.fstat(fd)
                # A chmod after the last write moves the ctime past the mtime (the fstat
                # before it makes Linux >= 6.13 stamp it finely), and then the stat cache
                # believes the record at once (``Known.matches``): the next checkout does
                # not re-hash a large file written moments ago. A small one costs less to
                # re-hash than a chmod each, so it gets one only if the umask took bits.
                if entry.size >= KERNEL_COPY_MIN or stat.S_IMODE(st.st_mode) != entry.mode:
                    os.fchmod(fd, entry.mode)
                    st = os.fstat(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            _discard([target])
            if isinstance(exc, OSError) and not isinstance(exc, CasError):
                raise OSError(exc.errno, f"{exc.strerror} while writing", full) from exc
            raise
        return st, fetched

    def _copy_verified(self, fd: int, entry: Entry) -> int:
        """Write ``entry`` through Python, verifying every piece; return bytes fetched."""
        fetched = 0
        whole = Hasher() if entry.chunks else None
        for digest, size in entry.chunks or ((entry.digest, entry.size),):
            data = self._local_copy(digest, size)
            if data is None:
                data = self.fetch.read(digest, where=f"{self.label}: {entry.path}")
                fetched += len(data)
            _write_all(fd, data)
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
        # Where each piece comes from, decided here: (local file or object, offset, size).
        sources: list[tuple[str, int, int, bool]] = []
        fetched = 0
        for digest, size in pieces:
            where = self.local.get(digest)
            if where is not None:
                sources.append((where[0], where[1], size, True))
                continue
            stored = self.objects.locate(digest)  # its loose file, or its place in a pack
            if stored is None or stored[2] != size:
                return None  # missing or damaged: the verified path names it
            sources.append((stored[0], stored[1], size, False))
            fetched += size
        if len(sources) == 1 and sources[0][0] == self.objects.path(entry.digest):
            return self._clone_or_copy(fd, sources[0][0], entry, fetched)  # a whole loose file
        sources = _coalesce(sources)
        # Two cores: a thread copies piece after piece in the kernel while this one
        # hashes what is already written (both mostly in system calls or C).
        copied: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        failure: list[BaseException] = []

        def copy_pieces() -> None:
            offset = 0
            try:
                for path, start, size, _ in sources:
                    n = kernelcopy.copy_range(self._source(path), fd, size, start, offset)
                    if n != size:
                        break
                    offset += size
                    copied.put(size)
            except FileNotFoundError:
                pass  # a missing object: the verified path raises MissingObject
            except BaseException as exc:
                failure.append(exc)
            copied.put(None)

        copier = threading.Thread(target=copy_pieces, name="cas-copy")
        copier.start()
        hasher, hashed, buffer = Hasher(), 0, self._hash_buffer()
        try:
            while (piece := copied.get()) is not None:
                hashed += kernelcopy.hash_range(fd, hasher, hashed, piece, buffer)
                # (A file that then fails to verify is written again and counted twice: rare.)
                self.progress.advance(0, piece)
        finally:
            copier.join()
        if failure:
            raise failure[0]
        if hashed != entry.size or hasher.hexdigest() != entry.digest:
            return None
        return fetched if os.fstat(fd).st_size == entry.size else None

    def _clone_or_copy(self, fd: int, path: str, entry: Entry, fetched: int) -> int | None:
        """One whole object into ``fd``: a reflink where possible, else a kernel copy."""
        try:
            with open(path, "rb") as obj:
                if kernelcopy.clone(obj.fileno(), fd):
                    copied = os.fstat(fd).st_size
                else:
                    copied = kernelcopy.copy_range(obj.fileno(), fd, entry.size, 0, 0)
        except FileNotFoundError:
            return None  # a missing object: the verified path raises MissingObject
        if copied != entry.size:
            return None
        got, length = kernelcopy.digest_fd(fd, entry.size, self._hash_buffer())
        if got != entry.digest or length != entry.size or os.fstat(fd).st_size != entry.size:
            return None
        self.progress.advance(0, entry.size)
        return fetched

    def _hash_buffer(self) -> bytearray:
        """The read buffer for verifying kernel copies, one for the whole checkout."""
        if self._hash_buf is None:
            self._hash_buf = bytearray(COPY_RUN)
        return self._hash_buf

    def _source(self, full: str) -> int:
        """An open descriptor of the local file ``full`` (kept open for its other chunks)."""
        stream = self._sources.get(full)
        if stream is None:
            stream = self._sources[full] = open(full, "rb")  # noqa: SIM115 - closed in close()
        return stream.fileno()

    def _count(self, name: str, st: os.stat_result, entry: Entry, fetched: int) -> None:
        self.progress.advance(1, 0)  # its bytes were counted as they were written
        self.files += 1
        self.bytes += fetched
        self.learned[name] = known_from_stat(st, entry.digest, entry.chunks)

    # -- content already on this disk ---------------------------------------
    def index_later(self, root: str, found: dict[str, os.stat_result]) -> None:
        """Note files under ``root`` whose chunks may serve this checkout (see ``local``)."""
        self._to_index.append((root, found))

    @property
    def local(self) -> dict[str, tuple[str, int, int]]:
        """Content already on this disk by digest, indexed from what the walks found."""
        while self._to_index:
            self._index_local(*self._to_index.pop())
        return self._local

    def _index_local(self, root: str, found: dict[str, os.stat_result]) -> None:
        prefix = root if root.endswith("/") else root + "/"
        for rel, st in found.items():
            full = prefix + rel
            known = self.known.get(full)
            # describes(), not matches(): every local copy is re-hashed before use, so a
            # file written moments ago (inside the racy window) still serves its chunks.
            if known is None or not known.describes(st):
                continue
            if known.chunks:
                offset = 0
                for digest, size in known.chunks:
                    self._local.setdefault(digest, (full, offset, size))
                    offset += size
            else:
                self._local.setdefault(known.digest, (full, 0, known.size))

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


def _coalesce(sources: list[tuple[str, int, int, bool]]) -> list[tuple[str, int, int, bool]]:
    """Neighbouring pieces — one file, back to back, as a snapshot packs a file's new
    chunks — merged into copies of at most ``COPY_RUN`` bytes: fewer system calls,
    and still small enough that hashing keeps pace with the copy."""
    merged: list[tuple[str, int, int, bool]] = []
    for path, start, size, local in sources:
        if merged:
            last_path, last_start, last_size, last_local = merged[-1]
            if (
                last_path == path
                and last_start + last_size == start
                and (last_size + size <= COPY_RUN)
            ):
                merged[-1] = (path, last_start, last_size + size, last_local)
                continue
        merged.append((path, start, size, local))
    return merged


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _discard(temps: Iterable[str]) -> None:
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
