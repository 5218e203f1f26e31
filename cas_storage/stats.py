"""How much the store holds, and how much deduplication saves."""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Catalog
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

    def to_json(self) -> dict:
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
    digests = list(objects)
    stored = sum(objects.size(d) for d in digests)
    return Stats(sum(v.bytes for v in versions), stored, len(digests), len(versions), works)
