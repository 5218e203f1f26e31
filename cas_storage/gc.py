"""Garbage collection: drop old versions by policy, then objects nothing references.

Safe beside any number of snapshots, by the lease protocol of ``locks.py``:

1. **plan** (no lock): list every object and its time, and read the manifests
   of the versions to keep — the slow part, on an object store especially. An
   object is a candidate when no kept version references it and it is older
   than the grace period.
2. **delete** (the exclusive lock, so no snapshot or checkout runs meanwhile):
   drop the versions the policy drops, *recompute* what the catalog references
   now, and delete the candidates it does not reference: loose files go, a pack
   holding any of them is rewritten without them (``packs.repack``).

A snapshot holds the shared lease from before it decides which stored objects
it reuses until after it records its version, so an object it relies on is
either referenced by the catalog when gc recomputes (it recorded) or not yet
chosen (it starts after gc and checks that what it reuses exists). That holds
for any grace, 0 included; the grace only spares writers that take no lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, Version
from .errors import CasError
from .locks import Locks
from .manifest import Manifest
from .objects import LocalObjects, ObjectStore
from .progress import Progress

GRACE_SECONDS = 3600.0
#: A pack without an index older than this was left by a writer that died (``packs.py``).
STALE_SECONDS = 3600.0


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

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "versions_dropped": [v.to_json() for v in self.versions_dropped],
            "objects_deleted": self.objects_deleted,
            "bytes_freed": self.bytes_freed,
            "objects_held": self.objects_held,
            "bytes_held": self.bytes_held,
            "grace_seconds": self.grace_seconds,
        }


def check_policy(keep_last: int | None, grace_seconds: float) -> None:
    """Refuse a policy gc cannot follow: fewer than one version, a negative or NaN grace."""
    if keep_last is not None and keep_last < 1:
        raise ValueError(
            f"keep_last must be at least 1 (the latest version is always kept), not {keep_last}"
        )
    if not isinstance(grace_seconds, (int, float)) or not grace_seconds >= 0:
        raise ValueError(f"the grace period must be a number of seconds >= 0, not {grace_seconds}")


def gc(
    objects: ObjectStore,
    catalog: Catalog,
    locks: Locks,
    keep_last: int | None = None,
    grace_seconds: float = GRACE_SECONDS,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> GcReport:
    """Keep the last ``keep_last`` versions of every path (all if ``None``), free the rest.

    >>> import fsspec
    >>> from cas_storage.objcatalog import ObjectCatalog
    >>> fs = fsspec.filesystem("memory")
    >>> objects = ObjectStore(fs, "/doc-gc")
    >>> gc(objects, ObjectCatalog(fs, "/doc-gc"), Locks(objects), keep_last=1).objects_deleted
    0
    """
    check_policy(keep_last, grace_seconds)
    manifests: dict[str, Manifest] = {}  # digest -> manifest: immutable, read once
    dropped, kept = _split(catalog.all_versions(), keep_last)
    referenced = _referenced(objects, kept, manifests)
    report = GcReport(dry_run=dry_run, grace_seconds=grace_seconds)
    progress = progress or Progress()
    cutoff = objects.store_time() - grace_seconds
    candidates: dict[str, int] = {}  # digest -> size
    stored = list(objects.inventory())  # listings give size and time: no HEAD each
    progress.start(total_items=len(stored))
    for digest, size, written in stored:
        progress.advance(1)
        if digest in referenced:
            continue
        if written > cutoff:
            report.objects_held += 1
            report.bytes_held += size
        else:
            candidates[digest] = size
    if dry_run:
        report.versions_dropped = dropped
        report.objects_deleted, report.bytes_freed = len(candidates), sum(candidates.values())
        return report
    with locks.exclusive("cas gc"):
        # Versions recorded since the plan are kept too; gone ones need no drop.
        dropped, kept = _split(catalog.all_versions(), keep_last)
        for v in dropped:
            catalog.delete(v)
        report.versions_dropped = dropped
        referenced = _referenced(objects, catalog.all_versions(), manifests)
        doomed = {d: size for d, size in candidates.items() if d not in referenced}
        # Loose files go; packs holding any of them are rewritten without them.
        objects.free(doomed)
        report.objects_deleted, report.bytes_freed = len(doomed), sum(doomed.values())
        objects.remove_orphan_packs(older_than=STALE_SECONDS)
    if isinstance(objects, LocalObjects):
        objects.remove_stale_temps()
    return report


def _split(versions: list[Version], keep_last: int | None) -> tuple[list[Version], list[Version]]:
    """``(dropped, kept)`` by the policy: the last ``keep_last`` of each path are kept."""
    by_path: dict[tuple[str, str], list[Version]] = {}
    for v in versions:
        by_path.setdefault((v.work, v.path), []).append(v)
    dropped: list[Version] = []
    kept: list[Version] = []
    for path_versions in by_path.values():
        cut = max(len(path_versions) - keep_last, 0) if keep_last is not None else 0
        dropped += path_versions[:cut]
        kept += path_versions[cut:]
    return dropped, kept


def _referenced(
    objects: ObjectStore, versions: list[Version], manifests: dict[str, Manifest]
) -> set[str]:
    referenced: set[str] = set()
    for v in versions:
        referenced.add(v.manifest)
        if v.manifest not in manifests:
            try:
                manifests[v.manifest] = Manifest.decode(objects.read(v.manifest))
            except (CasError, OSError) as exc:
                # Deleting with an unreadable manifest could free objects it needs: stop.
                raise CasError(
                    f"gc stopped: the manifest of {v.work}:{v.path} version "
                    f"{v.number} is unreadable ({exc}); run cas verify"
                ) from None
        referenced |= manifests[v.manifest].objects()
    return referenced
