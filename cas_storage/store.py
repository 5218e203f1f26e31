"""``Store``: objects + catalog + this machine's local state, behind one facade.

Examples:
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> store = Store.open(os.path.join(root, ".cas"), state=os.path.join(root, "state.db"))
    >>> os.makedirs(os.path.join(root, "ckpt"))
    >>> _ = open(os.path.join(root, "ckpt", "w.bin"), "wb").write(b"weights")
    >>> store.snapshot("root.train", "ckpt", os.path.join(root, "ckpt")).number
    1
    >>> store.checkout("root.train", "ckpt", os.path.join(root, "copy")).files_transferred
    1
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import checkout as _checkout
from . import gc as _gc
from . import snapshot as _snapshot
from . import stats as _stats
from . import verify as _verify
from .catalog import Catalog, SQLiteCatalog, Version
from .checkout import GetResult, load_manifest, manifest_kind, remember_manifest
from .errors import CasError, MissingObject, StoreUnavailable, not_found
from .gc import GcReport
from .keys import ancestors, check_text, check_work, normalize_key
from .localstate import KnownFiles, LocalState
from .locks import Locks
from .manifest import DIR, Manifest, mode_bits
from .objects import LocalObjects, ObjectStore
from .progress import Progress
from .stamps import held_as_stamped
from .stats import PathHistory, Stats, VersionUsage
from .status import StatusReport, status
from .tree import paused_gc
from .verify import Problem

DEFAULT_URL = "./.cas"


def default_url() -> str:
    """``$CAS_STORE`` or ``./.cas``."""
    return os.environ.get("CAS_STORE") or DEFAULT_URL


@dataclass(frozen=True)
class Located:
    """Where a work holds a path: inside the stored path ``stored`` at ``inner``,
    or (``stored is None``) as a folder made only of the stored paths ``below``."""

    stored: str | None
    inner: str = "."
    below: tuple[str, ...] = ()


class Store:
    """A content-addressed store: snapshot folders into versions, check versions out."""

    def __init__(self, objects: ObjectStore, catalog: Catalog, state: LocalState, url: str) -> None:
        self.objects = objects
        self.catalog = catalog
        self.state = state
        self.url = url
        self.locks = Locks(objects)

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | None = None,
        *,
        state: str | None = None,
        create: bool = True,
        fsync: bool = False,
        readonly: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> Store:
        """Open (or create) the store at ``url``, default ``$CAS_STORE`` or ``./.cas``.

        A local folder holds ``objects/`` and ``catalog.db`` (SQLite). An fsspec
        URL (``s3://bucket/prefix``, ``memory://name``) holds ``objects/``,
        ``meta.json`` and ``catalog/`` (one small immutable object per version).

        ``state`` is this machine's stat-cache file (default ``$CAS_STATE`` or
        ``~/.cache/cas_storage/state.db``). ``create=False`` raises
        ``FileNotFoundError`` instead of creating a missing store.
        ``storage_options`` go to the fsspec filesystem of a URL (for S3:
        ``endpoint_url``, ``profile``, ``anon``, ...; see s3fs).
        """
        url = os.fspath(url) if url is not None else default_url()
        if url.startswith("file://"):
            url = url[len("file://") :]
        if "://" in url:
            return cls._open_remote(url, state, create, storage_options or {})
        root = os.path.abspath(url)
        catalog_file = os.path.join(root, "catalog.db")
        if not os.path.exists(catalog_file) and not create:
            raise FileNotFoundError(not_found(f"store {root}", hint="no catalog.db"))
        objects_dir = os.path.join(root, "objects")
        if readonly:
            catalog = SQLiteCatalog(catalog_file, readonly=True)
        else:
            os.makedirs(objects_dir, exist_ok=True)
            catalog = SQLiteCatalog(catalog_file, holds_objects=_holds_objects(objects_dir))
        return cls(LocalObjects(root, fsync=fsync), catalog, LocalState(state), root)

    @classmethod
    def _open_remote(
        cls, url: str, state: str | None, create: bool, storage_options: dict[str, Any]
    ) -> Store:
        # Imported here: a local store never needs fsspec, and it is slow to import.
        import fsspec

        from . import remote
        from .objcatalog import ObjectCatalog

        # Other machines write to this store: a cached listing would hide their work.
        options = {"use_listings_cache": False, **storage_options}
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
            remote.connect(fs)
            catalog = ObjectCatalog(fs, root, create=create)
        except CasError:
            raise
        except FileNotFoundError as exc:
            if create:  # not even meta.json could be written: no such bucket
                raise StoreUnavailable(url, exc) from exc
            raise FileNotFoundError(not_found(f"store {url}", hint="no meta.json")) from None
        except Exception as exc:  # the backend's own: no plugin, credentials, endpoint, bucket
            raise StoreUnavailable(url, exc) from exc
        return cls(ObjectStore(fs, root), catalog, LocalState(state), url)

    @property
    def store_id(self) -> str:
        return getattr(self.catalog, "store_id", self.url)

    # -- writing and reading trees ------------------------------------------
    def snapshot(
        self,
        work: str,
        path: str,
        source: str | os.PathLike[str],
        progress: Progress | None = None,
        at: str = ".",
        quiet: float = 0.0,
    ) -> Version:
        """Record the local file or folder ``source`` as the next version of ``(work, path)``.

        With ``at`` (a path inside the stored folder ``path``), ``source`` replaces
        what the latest version holds at ``at``; the rest of the folder is kept.
        Unchanged content returns the latest version and records nothing.
        ``quiet`` (seconds; ``snapshot.QUIET_SECONDS`` suits a tree a running
        program writes) reads a file only once it has been unmodified that long.
        """
        work, key = check_work(work), normalize_key(path)
        source = os.path.abspath(os.fspath(source))
        inner = normalize_key(at)
        known = self.state.under(source)
        surveyed = _snapshot.Survey()
        if inner == ".":
            # Neither check reads a file or anything of the store but the latest version,
            # so neither needs the lease (it guards the objects a snapshot reuses from
            # choosing them until recorded). The build reuses the survey's walk.
            same = self._held_since_stamp(work, key, source, known)
            if same is None:
                surveyed = _snapshot.survey(known, source)
                if surveyed.built is not None:
                    same = self._latest_if(work, key, surveyed.built.manifest)
                    if same is not None:
                        remember_manifest(self.objects, same.manifest, surveyed.built.manifest)
                        self._record_local(source, known, surveyed, surveyed.built, same.manifest)
            if same is not None:
                if progress is not None:
                    progress.start(total_bytes=same.bytes)
                    progress.advance(same.files, same.bytes)
                return same
        # Under the shared lease from before choosing what to reuse until recorded:
        # gc deletes nothing meanwhile (locks.py, gc.py).
        with self.locks.shared(f"snapshot of {work}:{key}") as lease:
            latest = self.catalog.latest(work, key)
            base = None
            stored: set[str] = set()
            if latest is not None:
                try:
                    if inner == ".":
                        # Only its object set is needed: read straight off the encoding,
                        # not decoded and validated (~1 s per 100,000 files).
                        stored = Manifest.objects_in(self.objects.read(latest.manifest))
                    else:
                        base = self.manifest(latest)
                        stored = base.objects()
                except (CasError, OSError):
                    if inner != ".":
                        raise
                    # A damaged previous version must not block a new, whole snapshot.
            with self.objects.batch() as objects:  # all stored before the record
                built = _snapshot.build_durable(
                    objects, known, source, stored, progress, quiet, surveyed
                )
            manifest = built.manifest
            if inner != ".":
                manifest = (base or Manifest.build(DIR, [])).graft(
                    inner, manifest, _folder_modes(source, inner)
                )
            lease.check()
            version = _snapshot.record(self.objects, self.catalog, work, key, manifest, latest)
        remember_manifest(self.objects, version.manifest, manifest)
        self._record_local(source, known, surveyed, built, version.manifest)
        return version

    def _latest_if(self, work: str, key: str, manifest: Manifest) -> Version | None:
        """The latest version of ``(work, key)`` if it is ``manifest``, else ``None``."""
        latest = self.catalog.latest(work, key)
        return latest if latest is not None and latest.manifest == manifest.digest() else None

    def _held_since_stamp(
        self, work: str, key: str, source: str, known: KnownFiles
    ) -> Version | None:
        """The latest version of ``(work, key)`` if folder ``source`` is still as this
        machine's last snapshot of it left it, and that snapshot's manifest is the latest
        version's: one ``lstat`` per file and folder, no walk (``held_as_stamped``)."""
        stamp = self.state.stamp_of(source)
        if stamp is None or stamp.by != "snapshot":
            return None
        with paused_gc():  # local checks first: a changed folder costs no store request
            if not held_as_stamped(source, known, stamp):
                return None
        latest = self.catalog.latest(work, key)
        return latest if latest is not None and latest.manifest == stamp.manifest else None

    def _record_local(
        self,
        source: str,
        known: KnownFiles,
        surveyed: _snapshot.Survey,
        built: _snapshot.Built,
        digest: str,
    ) -> None:
        """This machine's record of a snapshot of ``source`` (manifest ``digest``): the
        stat cache, then the stamp that lets the next one skip its walk."""
        tree = self.state.record_tree(source, known, built.kept, built.learned)
        stamp = _snapshot.stamp_of_walk(surveyed, tree, built.manifest, digest)
        if stamp is not None:
            self.state.record_stamp(source, stamp)

    def record(self, work: str, path: str, manifest: Manifest) -> Version:
        """Record ``manifest`` as the next version; every object it needs must be stored.

        Raises ``MissingObject`` naming the first object the store lacks.
        """
        work, key = check_work(work), normalize_key(path)
        with self.locks.shared(f"record of {work}:{key}") as lease:
            gone = self.objects.missing(manifest.objects())
            if gone:
                raise MissingObject(sorted(gone)[0], f"a new version of {work}:{key}")
            latest = self.catalog.latest(work, key)
            lease.check()
            return _snapshot.record(self.objects, self.catalog, work, key, manifest, latest)

    def drop(self, work: str, path: str) -> None:
        """Delete every version of ``(work, path)``, oldest first.

        Oldest first, so that a concurrent reader still finds the latest version
        until the very last row goes; each delete is a compare-and-delete, so a
        version recorded meanwhile under a reused number survives.
        """
        for version in self.catalog.versions(work, normalize_key(path)):
            self.catalog.delete(version)

    def checkout(
        self,
        work: str,
        path: str,
        dest: str | os.PathLike[str],
        version: int | None = None,
        overwrite: bool = False,
        inner: str = ".",
        progress: Progress | None = None,
    ) -> GetResult:
        """Materialize a version of ``(work, path)`` (default latest) at ``dest``.

        ``progress`` (e.g. ``TerminalProgress("get")``) hears of every file written.
        """
        work, key = check_work(work), normalize_key(path)
        dest = os.fspath(dest)
        parts = (self.objects, self.catalog, self.state, self.store_id, work, key, dest, version)
        if overwrite:
            # A destination already holding the version reads no object: no lease needed.
            done = _checkout.in_place(*parts, inner, progress)
            if done is not None:
                return done
        # The shared lease: gc frees nothing of the version while it is read.
        with self.locks.shared(f"checkout of {work}:{key}", reading=True):
            return _checkout.checkout(*parts, overwrite, inner, progress)

    # -- questions ------------------------------------------------------------
    def versions(self, work: str, path: str, newest: int | None = None) -> list[Version]:
        """Versions of ``(work, path)``, oldest first; only the newest ``newest`` if given
        (on an object store, a listing of those alone)."""
        if newest is not None:
            return self.catalog.newest(work, normalize_key(path), newest)
        return self.catalog.versions(work, normalize_key(path))

    def version(self, work: str, path: str, number: int | None = None) -> Version:
        """One version (default latest); ``FileNotFoundError``/``UnknownVersion`` if absent."""
        return self.catalog.get(work, normalize_key(path), number)

    def find_version(self, work: str, path: str, prefix: str) -> Version:
        """The version of ``(work, path)`` whose manifest digest starts with ``prefix``.

        Raises ``LookupError`` when no version or more than one matches.
        """
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise ValueError(f"{prefix!r} is not a version number or digest prefix")
        found = [v for v in self.versions(work, path) if v.manifest.startswith(prefix)]
        if not found:
            raise LookupError(not_found(f"{work}:{path} version with manifest {prefix}..."))
        if len({v.manifest for v in found}) > 1:
            numbers = ", ".join(str(v.number) for v in found)
            raise LookupError(f"digest prefix {prefix} is ambiguous: versions {numbers}")
        return found[-1]

    def latest(self, work: str, path: str) -> Version | None:
        """The latest version of ``(work, path)``, ``None`` when it has none."""
        return self.catalog.latest(work, normalize_key(path))

    def exists(self, work: str, path: str) -> bool:
        """Whether ``(work, path)`` has at least one version."""
        return self.catalog.latest(work, normalize_key(path)) is not None

    def manifest(self, version: Version) -> Manifest:
        """The manifest of ``version`` (verified; errors name the version)."""
        validated_before = self.state.checked_out(version.manifest)
        return load_manifest(self.objects, version.manifest, version.label(), validated_before)

    def kind(self, version: Version) -> str:
        """``"dir"`` or ``"file"``: what ``version`` holds, without decoding its manifest."""
        return manifest_kind(self.objects, version.manifest, version.label())

    def works(self) -> list[str]:
        return self.catalog.works()

    def paths(self, work: str) -> list[str]:
        return self.catalog.paths(work)

    def locate(self, work: str, path: str) -> Located | None:
        """Where ``work`` holds ``path``; ``None`` when it does not.

        ``path`` is held when it is a stored path itself, lies inside the latest
        version of its nearest stored ancestor, or has stored paths below it.

        Examples:
            >>> # e.g. Located("outputs/ckpt", "model.pt") for "outputs/ckpt/model.pt"
        """
        key = normalize_key(path)
        keys = set(self.catalog.paths(work))
        if key in keys:
            return Located(key)
        for holder in ancestors(key) if key != "." else []:
            if holder in keys:
                latest = self.catalog.latest(work, holder)
                inner = key[len(holder) + 1 :]
                if latest is not None:
                    base = self.manifest(latest)
                    if base.kind == DIR and base.has(inner):
                        return Located(holder, inner)
                break
        below = tuple(sorted(k for k in keys if key == "." or k.startswith(key + "/")))
        return Located(None, below=below) if below else None

    def read(self, version: Version, inner: str = ".") -> Iterator[bytes]:
        """The bytes of the file at ``inner`` in ``version``, in pieces, verified.

        Raises ``FileNotFoundError`` when it is not in the snapshot and
        ``IsADirectoryError`` when it is a folder.
        """
        where = f"{version.work}:{version.path}" + ("" if inner == "." else f"/{inner}")
        manifest = self.manifest(version).subtree(inner)
        if manifest.kind != "file":
            raise IsADirectoryError(f"{inner} is a folder in {version.work}:{version.path}")
        for digest in manifest.entries[0].objects():
            yield self.objects.read(digest, where=where)

    # -- claims -----------------------------------------------------------------
    def claim(self, name: str, owner: str) -> tuple[str, bool]:
        """Claim ``name`` for ``owner`` unless someone holds it (create-only, atomic).

        Returns ``(holder, created)``: who holds the claim now, and whether this
        call created it. Drives claim each path before the first put of it.
        """
        return self.catalog.claim(check_text("claim name", name), check_work(owner))

    def release(self, name: str, owner: str) -> None:
        """Remove the claim ``name`` if ``owner`` holds it (compare-and-delete)."""
        self.catalog.release(name, owner)

    def status(
        self, work: str, path: str, source: str | os.PathLike[str], version: int | None = None
    ) -> StatusReport:
        """What differs between the local ``source`` and a version (default latest).

        Reads only the local files that the stat cache cannot vouch for; writes nothing.
        """
        v = self.version(work, path, version)
        return status(self.manifest(v), self.state, os.fspath(source))

    def history(
        self, work: str, path: str, versions: list[Version] | None = None
    ) -> list[VersionUsage]:
        """Per version of ``(work, path)``, oldest first: logical bytes, content bytes it
        newly stored, running totals of both (what dedup saved), and how many entries it
        added, removed and changed since the version before. Reads manifests only.

        ``versions`` (from ``versions()``) saves a catalog query when the caller has them.
        """
        return self.extend_history(PathHistory(), versions or self.versions(work, path)).versions

    def extend_history(self, history: PathHistory, versions: list[Version]) -> PathHistory:
        """Add to ``history`` the ``versions`` (oldest first) newer than its last one."""
        last = history.versions[-1].number if history.versions else 0
        for v in versions:
            if v.number > last:
                history.add(v.number, self.manifest(v))
        return history

    # -- maintenance ---------------------------------------------------------
    def stats(self) -> Stats:
        """Logical and stored bytes, dedup ratio, object and version counts."""
        return _stats.stats(self.objects, self.catalog)

    def verify(self, sample: int | None = None, progress: Progress | None = None) -> list[Problem]:
        """Re-hash objects (all, or ``sample`` of them) and check every version's references."""
        return _verify.verify(self.objects, self.catalog, sample, progress)

    def gc(
        self,
        keep_last: int | None = None,
        dry_run: bool = False,
        grace_seconds: float = _gc.GRACE_SECONDS,
        progress: Progress | None = None,
    ) -> GcReport:
        """Drop all but the last ``keep_last`` versions per path, then unreferenced objects.

        The report counts what was freed and what the grace period held back.
        """
        return _gc.gc(
            self.objects, self.catalog, self.locks, keep_last, grace_seconds, dry_run, progress
        )

    def export_git(
        self,
        repo: str | os.PathLike[str],
        work: str | None = None,
        path: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, int]:
        """Write version history as git commits on ``refs/cas/<work>/<path>``."""
        from . import gitexport as _gitexport  # dulwich: only this command needs it

        key = normalize_key(path) if path else None
        return _gitexport.export_git(
            self.objects, self.catalog, os.fspath(repo), work, key, progress
        )

    def close(self) -> None:
        for part in (self.catalog, self.state, self.objects):
            close = getattr(part, "close", None)
            if close:
                close()


def _folder_modes(source: str, inner: str) -> dict[str, int]:
    """Modes of the folders from the stored folder down to ``source`` (at ``inner``)."""
    top = source
    for _ in inner.split("/"):
        top = os.path.dirname(top)
    return {
        rel: mode_bits(os.stat(os.path.join(top, rel)).st_mode)
        for rel in [*ancestors(inner), inner]
    }


def _holds_objects(objects_dir: str) -> bool:
    try:
        with os.scandir(objects_dir) as entries:
            return any(e.is_dir() for e in entries)
    except FileNotFoundError:
        return False
