"""How much the store holds, and how much deduplication saves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog
from .manifest import Manifest, diff
from .objects import ObjectStore


@dataclass
class WorkStats:
    paths: int = 0
    versions: int = 0
    logical_bytes: int = 0


@dataclass
class Stats:
    """``logical_bytes`` sums every version's size; ``stored_bytes`` is what objects take."""

    logical_bytes: int
    stored_bytes: int
    objects: int
    versions: int
    works: dict[str, WorkStats] = field(default_factory=dict)

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes per stored byte (2.0: every byte stored serves two)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "dedup_ratio": round(self.dedup_ratio, 3),
            "objects": self.objects,
            "versions": self.versions,
            "works": {name: vars(w) for name, w in self.works.items()},
        }


def stats(objects: ObjectStore, catalog: Catalog) -> Stats:
    """Totals over every version and every object.

    >>> import fsspec
    >>> from cas_storage.objcatalog import ObjectCatalog
    >>> fs = fsspec.filesystem("memory")
    >>> stats(ObjectStore(fs, "/doc-stats"), ObjectCatalog(fs, "/doc-stats")).versions
    0
    """
    works: dict[str, WorkStats] = {}
    seen_paths: set[tuple[str, str]] = set()
    versions = catalog.all_versions()
    for v in versions:
        w = works.setdefault(v.work, WorkStats())
        w.versions += 1
        w.logical_bytes += v.bytes
        if (v.work, v.path) not in seen_paths:
            seen_paths.add((v.work, v.path))
            w.paths += 1
    sizes = [size for _, size, _ in objects.inventory()]
    return Stats(sum(v.bytes for v in versions), sum(sizes), len(sizes), len(versions), works)


@dataclass(frozen=True)
class VersionUsage:
    """One version of a path in its history: what it holds, adds and changes.

    ``stored_bytes`` counts content objects that no earlier version of the same
    path had (manifests, a few hundred bytes each, are left out); the running
    totals show what dedup saved over the path's history. ``added``, ``removed``
    and ``changed`` count entries against ``previous`` (the version before it;
    ``None`` for the first, whose entries all count as added).
    """

    number: int
    logical_bytes: int
    stored_bytes: int
    total_logical_bytes: int
    total_stored_bytes: int
    previous: int | None
    added: int
    removed: int
    changed: int

    def to_json(self) -> dict[str, int | None]:
        return {
            "version": self.number,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "total_logical_bytes": self.total_logical_bytes,
            "total_stored_bytes": self.total_stored_bytes,
            "previous": self.previous,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
        }


class PathHistory:
    """The usage of a path's versions, built oldest first and extendable.

    Versions are only ever appended (numbers grow), so a history computed once can
    take the versions recorded since without reading the older manifests again.

    >>> from cas_storage.manifest import Entry, Manifest
    >>> m = Manifest.build("dir", [Entry("a", "file", 0o644, 5, "1" * 32)])
    >>> h = PathHistory()
    >>> [(u.total_logical_bytes, u.total_stored_bytes) for u in (h.add(1, m), h.add(2, m))]
    [(5, 5), (10, 5)]
    """

    def __init__(self) -> None:
        self.versions: list[VersionUsage] = []
        self._seen: set[str] = set()
        self._last: tuple[int, Manifest] | None = None

    def add(self, number: int, manifest: Manifest) -> VersionUsage:
        """Append the next version (its number must exceed the last one's)."""
        if self._last is not None and number <= self._last[0]:
            raise ValueError(f"version {number} does not follow version {self._last[0]}")
        new = 0
        for entry in manifest.files:
            for digest, size in entry.chunks or ((entry.digest, entry.size),):
                if digest not in self._seen:
                    self._seen.add(digest)
                    new += size
        done = self.versions[-1] if self.versions else None
        total_logical = (done.total_logical_bytes if done else 0) + manifest.size
        total_stored = (done.total_stored_bytes if done else 0) + new
        if self._last is None:
            previous, counts = None, (len(manifest.entries), 0, 0)
        else:
            changes = diff(self._last[1], manifest)
            previous = self._last[0]
            counts = (len(changes.added), len(changes.removed), len(changes.changed))
        usage = VersionUsage(
            number, manifest.size, new, total_logical, total_stored, previous, *counts
        )
        self.versions.append(usage)
        self._last = (number, manifest)
        return usage
