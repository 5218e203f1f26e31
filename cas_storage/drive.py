"""``Drive``: a shared folder that any work can put files into and get files from.

A drive lives in the same content-addressed store as ``Path``. Each work that puts
something into drive ``lit://shared`` owns a catalog namespace of its own, the
catalog *work* ``drive:shared/<owner work>``; every ``put(path)`` snapshots the
local file or folder as the next version of ``(drive:shared/<owner>, path)``. So
drive content is deduplicated and versioned like any ``Path``: putting a changed
folder again stores only the changed objects, and ``cas ls`` / ``cas get`` see
drives as ordinary works.

Rules that keep reading simple:

- Per owner, stored paths never nest. Putting ``data/x`` while the owner already
  has the folder ``data`` records a new version of ``data`` with ``x`` replaced;
  putting ``data`` while the owner has ``data/x`` records ``data`` and drops the
  ``data/x`` entry (the new snapshot holds whatever is there now).
- ``delete(path)`` removes the owner's catalog rows for ``path`` (and everything
  stored under it); a path inside a folder that was put whole is removed by
  recording a new version of that folder without it. The drive's content is thus
  exactly what the catalog holds — no tombstones to filter — and objects no longer
  referenced become garbage for ``cas gc``.
- ``list`` and ``get`` read the catalog and, for folders put whole, their
  manifests; nothing else.

>>> drive = Drive("lit://shared")
>>> drive.name, drive.allow_duplicates
('shared', False)
>>> Drive("s3://shared")
Traceback (most recent call last):
...
ValueError: invalid drive id 's3://shared': a drive id is 'lit://' followed by one name without '/'
"""

from __future__ import annotations

import errno
import os
import pathlib
import posixpath
import time
from dataclasses import dataclass
from datetime import datetime

from . import context
from .catalog import Version
from .checkout import GetResult
from .errors import CasError
from .manifest import DIR, FILE, Entry, Manifest, mode_bits
from .snapshot import record
from .store import Store, normalize_key

PREFIX = "lit://"
#: Catalog works of drive ``NAME`` are ``drive:NAME/<owner work>``.
WORK_PREFIX = "drive:"
#: ``get(timeout=...)`` polls the catalog, starting fast and backing off to this.
POLL_FIRST, POLL_MAX = 0.05, 0.25


def drive_work(name: str, owner: str) -> str:
    """The catalog work that holds what ``owner`` put into drive ``name``.

    >>> drive_work("shared", "root.a")
    'drive:shared/root.a'
    """
    return f"{WORK_PREFIX}{name}/{owner}"


@dataclass(frozen=True)
class _Found:
    """Where one owner holds a drive path.

    ``key`` is the stored path holding it (``inner`` is the path inside that
    snapshot); ``key is None`` means a folder made only of several puts below it
    (``keys``).
    """

    key: str | None
    inner: str = "."
    keys: tuple[str, ...] = ()


class Drive:
    """A shared folder in the store: works ``put`` files in, any work can ``list``/``get`` them.

    Operations act for the work running in this process (its name and root come
    from ``cas_storage.context``), so a drive handed to another work's ``run``
    acts for that work there. Outside a running Work they raise ``RuntimeError``.

    >>> import pickle
    >>> pickle.loads(pickle.dumps(Drive("lit://shared", allow_duplicates=True)))
    Drive('lit://shared', allow_duplicates=True)
    """

    def __init__(self, id: str, allow_duplicates: bool = False) -> None:
        self.name = _parse_id(id)
        self.id = id
        self.allow_duplicates = bool(allow_duplicates)

    # Only the id and the flag travel: the store and the caller come from the context.
    def __getstate__(self) -> dict:
        return {"id": self.id, "allow_duplicates": self.allow_duplicates}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["id"], state.get("allow_duplicates", False))

    def __repr__(self) -> str:
        extra = ", allow_duplicates=True" if self.allow_duplicates else ""
        return f"Drive({self.id!r}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Drive):
            return NotImplemented
        return (self.id, self.allow_duplicates) == (other.id, other.allow_duplicates)

    def __hash__(self) -> int:
        return hash((self.id, self.allow_duplicates))

    # -- operations -----------------------------------------------------------
    def put(self, path: str | os.PathLike[str]) -> Version:
        """Copy the local file or folder ``path`` (relative to the work root) into the drive.

        Returns the version recorded. Raises ``FileNotFoundError`` if ``path`` does
        not exist locally, ``FileExistsError`` naming the owner if another work
        already put that path (unless ``allow_duplicates``), and ``ValueError`` for
        a path outside the work root.

        >>> # inside a Work:  drive.put("reports/summary.txt")
        """
        ctx = context.require("Drive.put()")
        key = _key(ctx, path)
        local = pathlib.Path(ctx.root) / key
        if not os.path.lexists(local):
            raise FileNotFoundError(errno.ENOENT, "nothing to put into the drive at", str(local))
        real_root = os.path.realpath(ctx.root)
        if os.path.commonpath([os.path.realpath(local), real_root]) != real_root:
            raise ValueError(f"{key} resolves outside the work root {ctx.root}; cannot put it")
        if not self.allow_duplicates:
            self._refuse_if_taken(ctx, key)
        store, mine = ctx.store, self._work(ctx.name)
        keys = set(store.paths(mine))
        holder = next((q for q in _ancestors(key) if q in keys), None)
        if holder is not None:
            return _merge_into(store, mine, holder, key, local)
        fresh = key not in keys
        version = store.snapshot(mine, key, local)
        for k in keys:
            if k.startswith(key + "/"):
                _drop(store, mine, k)  # the new snapshot of ``key`` now holds it
        if fresh and not self.allow_duplicates:
            self._settle_race(ctx, key)
        return version

    def list(self, path: str | os.PathLike[str] = ".", component_name: str | None = None):
        """Names directly under ``path``, merged across owners (or only ``component_name``'s).

        ``[]`` for an empty drive. Raises ``FileNotFoundError`` if no owner has
        ``path`` and ``NotADirectoryError`` if it is a file.

        >>> # drive.list() -> ['data', 'notes.txt']; drive.list("data", "root.a") -> ['x.csv']
        """
        ctx = context.require("Drive.list()")
        key = _key(ctx, path, allow_root=True)
        names: set[str] = set()
        present, is_file = key == ".", False
        for owner in self._owners(ctx.store, component_name):
            try:
                found = _children(ctx.store, self._work(owner), key)
            except NotADirectoryError:
                is_file = True
                continue
            if found is not None:
                present = True
                names |= found
        if not present:
            if is_file:
                raise NotADirectoryError(errno.ENOTDIR, f"{self.id}: not a folder", key)
            raise FileNotFoundError(errno.ENOENT, self._nothing(component_name), key)
        return sorted(names)

    def get(
        self,
        path: str | os.PathLike[str],
        component_name: str | None = None,
        timeout: float | None = None,
        overwrite: bool = False,
    ) -> GetResult:
        """Copy ``path`` from the drive into this work's root at the same relative path.

        ``timeout`` (seconds) waits for the path to appear, polling the store;
        then ``FileNotFoundError``. Raises ``FileExistsError`` if the path exists
        locally and ``overwrite`` is false, and ``ValueError`` naming the owners
        when several works put it and ``component_name`` does not pick one.

        >>> # drive.get("reports/summary.txt", timeout=30)
        """
        ctx = context.require("Drive.get()")
        key = _key(ctx, path)
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
        dest = pathlib.Path(ctx.root) / key
        if not overwrite and os.path.lexists(dest):
            raise FileExistsError(
                errno.EEXIST, "exists locally; use get(overwrite=True) to replace it", str(dest)
            )
        deadline = time.monotonic() + (timeout or 0)
        delay = POLL_FIRST
        while True:
            holders = self._holders(ctx.store, key, component_name)
            if len(holders) > 1:
                raise ValueError(
                    f"{self.id}: {key} was put by several works ({', '.join(sorted(holders))}); "
                    "pass component_name= to choose one"
                )
            if holders:
                ((owner, found),) = holders.items()
                try:
                    return _checkout(ctx.store, self._work(owner), key, found, dest)
                except FileNotFoundError as exc:
                    if isinstance(exc, CasError):
                        raise  # a missing object is damage, not a deleted path
                    # deleted between the lookup and the checkout: keep waiting
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" after waiting {timeout} s" if timeout else ""
                raise FileNotFoundError(errno.ENOENT, self._nothing(component_name) + waited, key)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX)

    def delete(self, path: str | os.PathLike[str]) -> None:
        """Remove ``path`` (file or folder) from what the calling work put into the drive.

        Raises ``PermissionError`` if only other works have it and
        ``FileNotFoundError`` if nobody does.
        """
        ctx = context.require("Drive.delete()")
        key = _key(ctx, path)
        store, mine = ctx.store, self._work(ctx.name)
        keys = set(store.paths(mine))
        removed = False
        for k in sorted(keys):
            if k == key or k.startswith(key + "/"):
                _drop(store, mine, k)
                removed = True
        holder = next((q for q in _ancestors(key) if q in keys), None)
        if holder is not None:
            base = _manifest(store, mine, holder)
            inner = key[len(holder) + 1 :]
            if base is not None and base.kind == DIR and inner in base.by_path():
                _record(store, mine, holder, Manifest.build(DIR, _without(base.entries, inner)))
                removed = True
        if removed:
            return
        others = sorted(self._holders(store, key, None))
        if others:
            raise PermissionError(
                errno.EACCES,
                f"{self.id}: only {', '.join(others)} put this; a work can delete only what it put",
                key,
            )
        raise FileNotFoundError(errno.ENOENT, self._nothing(None), key)

    # -- helpers ------------------------------------------------------------------
    def _work(self, owner: str) -> str:
        return drive_work(self.name, owner)

    def _owners(self, store: Store, component_name: str | None) -> list[str]:
        if component_name is not None:
            return [component_name]
        prefix = self._work("")
        return [w[len(prefix) :] for w in store.works() if w.startswith(prefix)]

    def _holders(self, store: Store, key: str, component_name: str | None) -> dict[str, _Found]:
        out = {}
        for owner in self._owners(store, component_name):
            found = _locate(store, self._work(owner), key)
            if found is not None:
                out[owner] = found
        return out

    def _nothing(self, component_name: str | None) -> str:
        who = f"{component_name} has" if component_name else "no work has"
        return f"{self.id}: {who} put this into the drive"

    def _refuse_if_taken(self, ctx: context.WorkContext, key: str) -> None:
        others = sorted(o for o in self._holders(ctx.store, key, None) if o != ctx.name)
        if others:
            raise FileExistsError(
                errno.EEXIST,
                f"{self.id}: already put by {', '.join(others)} "
                "(use Drive(..., allow_duplicates=True) to keep both)",
                key,
            )

    def _settle_race(self, ctx: context.WorkContext, key: str) -> None:
        """Two works that put the same new path at once: the earlier put wins.

        Both check before writing, so both may pass; after writing, each compares
        when the path was first recorded, and the later one withdraws its put.
        """
        store = ctx.store
        mine = _claimed(store, self._work(ctx.name), _Found(key))
        if mine is None:
            return
        for owner, found in self._holders(store, key, None).items():
            theirs = _claimed(store, self._work(owner), found)
            if owner != ctx.name and theirs is not None and (theirs, owner) < (mine, ctx.name):
                _drop(store, self._work(ctx.name), key)
                raise FileExistsError(
                    errno.EEXIST,
                    f"{self.id}: {owner} put this at the same time, first "
                    "(use Drive(..., allow_duplicates=True) to keep both)",
                    key,
                )


def _parse_id(id: object) -> str:
    bad = f"invalid drive id {id!r}: a drive id is 'lit://' followed by one name without '/'"
    if not isinstance(id, str) or not id.startswith(PREFIX):
        raise ValueError(bad)
    name = id[len(PREFIX) :]
    if not name or "/" in name or "\0" in name or name in (".", "..") or name != name.strip():
        raise ValueError(bad)
    return name


def _key(ctx: context.WorkContext, path: str | os.PathLike[str], allow_root: bool = False) -> str:
    """The drive path of ``path``: relative to the work root, normalized, never escaping it."""
    text = os.fspath(path)
    if text.startswith(PREFIX):
        text = text[len(PREFIX) :] or "."
    if os.path.isabs(text):
        root = os.fspath(ctx.root)
        rel = os.path.relpath(text, root)
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{text} lies outside the work root {root}")
        text = rel
    key = normalize_key(text)
    if key == "." and not allow_root:
        raise ValueError("name a file or folder inside the work root, not the root itself")
    return key


def _ancestors(key: str) -> list[str]:
    """Proper ancestors of ``key``, deepest first (``a/b/c`` → ``a/b``, ``a``)."""
    out = []
    head = posixpath.dirname(key)
    while head:
        out.append(head)
        head = posixpath.dirname(head)
    return out


def _manifest(store: Store, work: str, key: str) -> Manifest | None:
    """The latest manifest of ``(work, key)``; ``None`` if it was just deleted."""
    latest = store.catalog.latest(work, key)
    return None if latest is None else store.manifest(latest)


def _locate(store: Store, work: str, key: str) -> _Found | None:
    keys = store.paths(work)
    if key in keys:
        return _Found(key)
    for holder in _ancestors(key):
        if holder in keys:
            base = _manifest(store, work, holder)
            inner = key[len(holder) + 1 :]
            if base is not None and base.kind == DIR and inner in base.by_path():
                return _Found(holder, inner)
            break
    below = tuple(k for k in keys if key == "." or k.startswith(key + "/"))
    return _Found(None, keys=below) if below else None


def _children(store: Store, work: str, key: str) -> set[str] | None:
    """Names directly under ``key`` for one owner; ``None`` if the owner lacks ``key``."""
    found = _locate(store, work, key)
    if found is None:
        return None
    names: set[str] = set()
    if found.key is not None:
        base = _manifest(store, work, found.key)
        if base is None:
            return None
        sub = base.subtree(found.inner)
        if sub.kind == FILE:
            raise NotADirectoryError(key)
        names |= {e.path for e in sub.entries if "/" not in e.path}
    for k in found.keys:
        rest = k if key == "." else k[len(key) + 1 :]
        names.add(rest.split("/", 1)[0])
    return names


def _checkout(store: Store, work: str, key: str, found: _Found, dest: pathlib.Path) -> GetResult:
    if found.key is not None:
        return store.checkout(work, found.key, dest, overwrite=True, inner=found.inner)
    # A folder assembled from several puts below it: check each out in place.
    if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest)):
        os.unlink(dest)
    results = []
    for k in found.keys:
        rel = k if key == "." else k[len(key) + 1 :]
        results.append(store.checkout(work, k, dest / rel, overwrite=True))
    return GetResult(
        max(r.version for r in results),
        sum(r.files_transferred for r in results),
        sum(r.bytes_transferred for r in results),
    )


def _claimed(store: Store, work: str, found: _Found) -> datetime | None:
    """When the owner first recorded what it holds at this path."""
    keys = [found.key] if found.key is not None else list(found.keys)
    times = [vs[0].created for k in keys if (vs := store.catalog.versions(work, k))]
    return min(times) if times else None


def _drop(store: Store, work: str, key: str) -> None:
    """Delete every version of ``(work, key)``, oldest first.

    Oldest first, so that a concurrent reader still finds the latest version
    until the very last row goes.
    """
    for version in store.catalog.versions(work, key):
        store.catalog.delete(version)


def _record(store: Store, work: str, key: str, manifest: Manifest) -> Version:
    """Record ``manifest`` (whose objects are stored) as the next version of ``(work, key)``."""
    return record(store.objects, store.catalog, work, key, manifest)


def _without(entries: tuple[Entry, ...] | list[Entry], inner: str) -> list[Entry]:
    return [e for e in entries if e.path != inner and not e.path.startswith(inner + "/")]


def _merge_into(store: Store, work: str, holder: str, key: str, local: pathlib.Path) -> Version:
    """Put ``key`` that lies inside the owner's stored folder ``holder``.

    The new content is snapshotted under its own key (storing its objects), then
    spliced into a new version of ``holder``, and the temporary key is dropped.
    """
    part = store.manifest(store.snapshot(work, key, local))
    base = _manifest(store, work, holder)
    entries = list(base.entries) if base is not None and base.kind == DIR else []
    inner = key[len(holder) + 1 :]
    holder_local = local.parents[inner.count("/")]  # the holder folder on this disk
    entries = _without(entries, inner)
    # Folders between holder and key must be folders in the manifest too.
    for parent in reversed(_ancestors(inner)):
        existing = next((e for e in entries if e.path == parent), None)
        if existing is not None and existing.type == DIR:
            continue
        entries = _without(entries, parent)
        entries.append(Entry(parent, DIR, mode_bits(os.stat(holder_local / parent).st_mode)))
    if part.kind == FILE:
        e = part.entries[0]
        entries.append(Entry(inner, FILE, e.mode, e.size, e.digest, e.chunks))
    else:
        entries.append(Entry(inner, DIR, mode_bits(os.stat(local).st_mode)))
        for e in part.entries:
            entries.append(
                Entry(f"{inner}/{e.path}", e.type, e.mode, e.size, e.digest, e.chunks, e.target)
            )
    version = _record(store, work, holder, Manifest.build(DIR, entries))
    _drop(store, work, key)
    return version


__all__ = ["Drive", "drive_work"]
