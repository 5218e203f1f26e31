"""``Store``: objects + catalog + this machine's local state, behind one facade.

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
import posixpath

import fsspec

from . import checkout as _checkout
from . import gc as _gc
from . import gitexport as _gitexport
from . import snapshot as _snapshot
from . import stats as _stats
from . import verify as _verify
from .catalog import Catalog, SQLiteCatalog, Version
from .checkout import GetResult, load_manifest
from .gc import GcReport
from .localstate import LocalState
from .manifest import Manifest
from .objcatalog import ObjectCatalog
from .objects import LocalObjects, ObjectStore
from .progress import Progress
from .stats import Stats
from .verify import Problem

DEFAULT_URL = "./.cas"


def default_url() -> str:
    """``$CAS_STORE`` or ``./.cas``."""
    return os.environ.get("CAS_STORE") or DEFAULT_URL


def normalize_key(path: str) -> str:
    """The catalog key of a shared path: relative, POSIX, no ``..``.

    >>> normalize_key("./outputs//ckpt/")
    'outputs/ckpt'
    """
    text = str(path)
    if not text or "\0" in text:
        raise ValueError(f"invalid shared path {path!r}: empty or contains NUL")
    if text.startswith("/"):
        raise ValueError(f"shared path {path!r} must be relative to the work's root")
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"shared path {path!r} escapes the work's root")
    return norm


def _check_work(work: str) -> str:
    if not isinstance(work, str) or not work or "\0" in work:
        raise ValueError(f"invalid work name {work!r}")
    return work


class Store:
    """A content-addressed store: snapshot folders into versions, check versions out."""

    def __init__(self, objects: ObjectStore, catalog: Catalog, state: LocalState, url: str) -> None:
        self.objects = objects
        self.catalog = catalog
        self.state = state
        self.url = url

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | None = None,
        *,
        state: str | None = None,
        create: bool = True,
        fsync: bool = False,
    ) -> Store:
        """Open (or create) the store at ``url``, default ``$CAS_STORE`` or ``./.cas``.

        A local folder holds ``objects/`` and ``catalog.db`` (SQLite). An fsspec
        URL (``s3://bucket/prefix``, ``memory://name``) holds ``objects/``,
        ``meta.json`` and ``catalog/`` (one small immutable object per version).

        ``state`` is this machine's stat-cache file (default ``$CAS_STATE`` or
        ``~/.cache/cas_storage/state.db``). ``create=False`` raises
        ``FileNotFoundError`` instead of creating a missing store.
        """
        url = os.fspath(url) if url is not None else default_url()
        if url.startswith("file://"):
            url = url[len("file://") :]
        if "://" in url:
            return cls._open_remote(url, state, create)
        root = os.path.abspath(url)
        catalog_file = os.path.join(root, "catalog.db")
        if not os.path.exists(catalog_file) and not create:
            raise FileNotFoundError(f"no store at {root} (no catalog.db)")
        os.makedirs(os.path.join(root, "objects"), exist_ok=True)
        catalog = SQLiteCatalog(catalog_file)
        return cls(LocalObjects(root, fsync=fsync), catalog, LocalState(state), root)

    @classmethod
    def _open_remote(cls, url: str, state: str | None, create: bool) -> Store:
        fs, root = fsspec.core.url_to_fs(url)
        if not create and not fs.exists(f"{root.rstrip('/')}/meta.json"):
            raise FileNotFoundError(f"no store at {url} (no meta.json)")
        return cls(ObjectStore(fs, root), ObjectCatalog(fs, root), LocalState(state), url)

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
    ) -> Version:
        """Record the local file or folder ``source`` as the next version of ``(work, path)``."""
        return _snapshot.snapshot(
            self.objects,
            self.catalog,
            self.state,
            _check_work(work),
            normalize_key(path),
            os.fspath(source),
            progress,
        )

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
        return _checkout.checkout(
            self.objects,
            self.catalog,
            self.state,
            self.store_id,
            _check_work(work),
            normalize_key(path),
            os.fspath(dest),
            version,
            overwrite,
            inner,
            progress,
        )

    # -- questions ------------------------------------------------------------
    def versions(self, work: str, path: str) -> list[Version]:
        """Versions of ``(work, path)``, oldest first."""
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
            raise LookupError(f"{work}:{path} has no version whose manifest starts with {prefix}")
        if len({v.manifest for v in found}) > 1:
            numbers = ", ".join(str(v.number) for v in found)
            raise LookupError(f"digest prefix {prefix} is ambiguous: versions {numbers}")
        return found[-1]

    def exists(self, work: str, path: str) -> bool:
        """Whether ``(work, path)`` has at least one version."""
        return self.catalog.latest(work, normalize_key(path)) is not None

    def manifest(self, version: Version) -> Manifest:
        return load_manifest(self.objects, version.manifest)

    def works(self) -> list[str]:
        return self.catalog.works()

    def paths(self, work: str) -> list[str]:
        return self.catalog.paths(work)

    def resolve(self, work: str, path: str) -> tuple[str, str] | None:
        """The stored path that holds ``path`` (itself or its nearest stored parent).

        Returns ``(stored path, path inside it)``, or ``None`` when nothing holds it.

        >>> # e.g. ("outputs/ckpt", "model.pt") for "outputs/ckpt/model.pt"
        """
        key = normalize_key(path)
        candidate, inner = key, "."
        while True:
            if self.catalog.latest(work, candidate) is not None:
                return candidate, inner
            if candidate in (".", ""):
                return None
            head, tail = posixpath.split(candidate)
            inner = tail if inner == "." else f"{tail}/{inner}"
            candidate = head or "."

    # -- maintenance ---------------------------------------------------------
    def stats(self) -> Stats:
        """Logical and stored bytes, dedup ratio, object and version counts."""
        return _stats.stats(self.objects, self.catalog)

    def verify(self, sample: int | None = None) -> list[Problem]:
        """Re-hash objects (all, or ``sample`` of them) and check every version's references."""
        return _verify.verify(self.objects, self.catalog, sample)

    def gc(
        self,
        keep_last: int | None = None,
        dry_run: bool = False,
        grace_seconds: float = _gc.GRACE_SECONDS,
    ) -> GcReport:
        """Drop all but the last ``keep_last`` versions per path, then unreferenced objects."""
        return _gc.gc(self.objects, self.catalog, keep_last, grace_seconds, dry_run)

    def export_git(self, repo: str, work: str | None = None, path: str | None = None) -> dict:
        """Write version history as git commits on ``refs/cas/<work>/<path>``."""
        key = normalize_key(path) if path else None
        return _gitexport.export_git(self.objects, self.catalog, os.fspath(repo), work, key)

    def close(self) -> None:
        for part in (self.catalog, self.state):
            close = getattr(part, "close", None)
            if close:
                close()
