"""Re-hash objects and check that every version's manifest and content are present."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .catalog import Catalog
from .errors import CasError
from .hashing import digest_bytes
from .manifest import Manifest
from .objects import ObjectStore
from .progress import Progress


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the store: ``kind`` is ``corrupt``, ``missing`` or ``invalid``."""

    kind: str
    digest: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} object {self.digest}: {self.detail}"


def verify(
    objects: ObjectStore,
    catalog: Catalog,
    sample: int | None = None,
    progress: Progress | None = None,
) -> list[Problem]:
    """Every problem found; ``[]`` for a sound store. ``sample`` re-hashes only N objects.

    >>> import fsspec
    >>> from cas_storage.objcatalog import ObjectCatalog
    >>> fs = fsspec.filesystem("memory")
    >>> verify(ObjectStore(fs, "/doc-verify"), ObjectCatalog(fs, "/doc-verify"))
    []
    """
    problems = [
        Problem("corrupt", name, f"pack index unreadable: {why}")
        for name, why in sorted(objects.pack_problems().items())
    ]
    stored = {digest: size for digest, size, _ in objects.inventory()}
    digests = sorted(stored)
    if sample is not None and sample < len(digests):
        digests = random.sample(digests, sample)
    index = objects.pack_index()  # read in storage order: neighbours in a pack in one read
    digests.sort(key=lambda d: index.get(d) or ("", 0, 0))
    progress = progress or Progress()
    progress.start(total_items=len(digests))
    with objects.read_ahead((d, stored[d]) for d in digests) as reader:
        for digest in digests:
            try:
                data = reader.read(digest, verify=False)
            except FileNotFoundError:
                continue  # deleted (by gc) since it was listed
            progress.advance(1, len(data))
            got = digest_bytes(data)
            if got != digest:
                problems.append(Problem("corrupt", digest, f"content hashes to {got}"))
    unlisted: dict[str, list[str]] = {}  # digest -> who needs it
    for v in catalog.all_versions():
        owner = v.label()
        try:
            manifest = Manifest.decode(objects.read(v.manifest))
        except (CasError, OSError) as exc:
            kind = "missing" if isinstance(exc, FileNotFoundError) else "invalid"
            problems.append(Problem(kind, v.manifest, f"the manifest of {owner}: {exc}"))
            continue
        for entry in manifest.files:
            for digest in entry.objects():
                if digest not in stored:
                    unlisted.setdefault(digest, []).append(f"{owner}: {entry.path}")
    # Written since the listing, or really missing: ask once, for all of them.
    for digest in sorted(objects.missing(unlisted)):
        problems += [Problem("missing", digest, where) for where in unlisted[digest]]
    return problems
