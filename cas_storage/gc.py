"""Garbage collection: drop old versions by policy, then objects nothing references.

Objects younger than the grace period are kept even when unreferenced: a
snapshot running at the same time writes (or touches) its objects before it
records its version, so they are always young while it is still in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .catalog import Catalog, Version
from .errors import CasError
from .manifest import Manifest
from .objects import LocalObjects, ObjectStore
from .progress import Progress

GRACE_SECONDS = 3600.0


@dataclass
class GcReport:
    versions_dropped: list[Version] = field(default_factory=list)
    objects_deleted: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    #: Unreferenced objects kept only because they are younger than the grace period.
    objects_held: int = 0
    bytes_held: int = 0
    grace_seconds: float = GRACE_SECONDS

    def to_json(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "versions_dropped": [v.to_json() for v in self.versions_dropped],
            "objects_deleted": self.objects_deleted,
            "bytes_freed": self.bytes_freed,
            "objects_held": self.objects_held,
            "bytes_held": self.bytes_held,
            "grace_seconds": self.grace_seconds,
        }


def gc(
    objects: ObjectStore,
    catalog: Catalog,
    keep_last: int | None = None,
    grace_seconds: float = GRACE_SECONDS,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> GcReport:
    """Keep the last ``keep_last`` versions of every path (all if ``None``), free the rest.

    >>> import fsspec
    >>> from cas_storage.objcatalog import ObjectCatalog
    >>> fs = fsspec.filesystem("memory")
    >>> gc(ObjectStore(fs, "/doc-gc"), ObjectCatalog(fs, "/doc-gc"), keep_last=1).objects_deleted
    0
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(
            f"keep_last must be at least 1 (the latest version is always kept), not {keep_last}"
        )
    report = GcReport(dry_run=dry_run, grace_seconds=grace_seconds)
    progress = progress or Progress()
    kept: list[Version] = []
    by_path: dict[tuple[str, str], list[Version]] = {}
    for v in catalog.all_versions():
        by_path.setdefault((v.work, v.path), []).append(v)
    for versions in by_path.values():
        cut = len(versions) - keep_last if keep_last is not None else 0
        report.versions_dropped += versions[: max(cut, 0)]
        kept += versions[max(cut, 0) :]
    if not dry_run:
        for v in report.versions_dropped:
            catalog.delete(v)
        kept = catalog.all_versions()  # versions recorded meanwhile are kept too
    referenced: set[str] = set()
    for v in kept:
        referenced.add(v.manifest)
        try:
            referenced |= Manifest.decode(objects.read(v.manifest)).objects()
        except (CasError, OSError) as exc:
            # Deleting with an unreadable manifest could free objects it needs: stop.
            raise CasError(
                f"gc stopped: the manifest of {v.work}:{v.path} version "
                f"{v.number} is unreadable ({exc}); run cas verify"
            ) from None
    cutoff = time.time() - grace_seconds
    digests = list(objects)
    progress.start(total_items=len(digests))
    for digest in digests:
        progress.advance(1)
        if digest in referenced:
            continue
        try:
            young = objects.mtime(digest) > cutoff
            size = objects.size(digest)
        except FileNotFoundError:
            continue
        if young:
            report.objects_held += 1
            report.bytes_held += size
            continue
        if not dry_run:
            objects.delete(digest)
        report.objects_deleted += 1
        report.bytes_freed += size
    if not dry_run and isinstance(objects, LocalObjects):
        objects.remove_stale_temps()
    return report
