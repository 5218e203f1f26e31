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
- The first work to put a path owns it: ``put`` first creates the drive's
  create-only *claim* record for that path (``Store.claim``), and the work whose
  claim exists wins; the other's ``put`` raises ``FileExistsError`` naming the
  owner and records nothing (unless ``allow_duplicates``).
- Every ``put`` records exactly one version, of the path itself or of the owner's
  stored folder that holds it — no temporary keys.
- ``delete(path)`` removes the owner's catalog rows for ``path`` (and everything
  stored under it); a path inside a folder that was put whole is removed by
  recording a new version of that folder without it. The drive's content is thus
  exactly what the catalog holds — no tombstones to filter — and objects no longer
  referenced become garbage for ``cas gc``.
- ``list`` and ``get`` read the catalog and, for folders put whole, their
  manifests; nothing else.

Examples:
    >>> drive = Drive("lit://shared")
    >>> drive.name, drive.allow_duplicates
    ('shared', False)
    >>> Drive("s3://shared")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid drive id 's3://shared': a drive id is 'lit://' followed by one name...
"""

from __future__ import annotations

import builtins
import errno
import os
import pathlib
import time
from typing import Any

from . import context
from .catalog import Version
from .checkout import GetResult
from .errors import CasError
from .keys import ancestors, drive_work, key_under, normalize_key, parse_drive_id
from .manifest import DIR, FILE
from .store import Located, Store

#: ``get(timeout=...)`` polls the catalog, starting fast and backing off to this.
POLL_FIRST, POLL_MAX = 0.05, 0.25


class Drive:
    """A shared folder in the store: works ``put`` files in, any work can ``list``/``get`` them.

    Operations act for the work running in this process (its name and root come
    from ``cas_storage.context``), so a drive handed to another work's ``run``
    acts for that work there. Outside a running Work they raise ``RuntimeError``.

    Examples:
        >>> import pickle
        >>> pickle.loads(pickle.dumps(Drive("lit://shared", allow_duplicates=True)))
        Drive('lit://shared', allow_duplicates=True)
    """

    def __init__(self, id: str, allow_duplicates: bool = False) -> None:
        self.name = parse_drive_id(id)
        self.id = id
        self.allow_duplicates = bool(allow_duplicates)

    # Only the id and the flag travel: the store and the caller come from the context.
    def __getstate__(self) -> dict[str, Any]:
        return {"id": self.id, "allow_duplicates": self.allow_duplicates}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Drive.__init__(self, state["id"], state.get("allow_duplicates", False))

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

        Examples:
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
        store, mine = ctx.store, self._work(ctx.name)
        claimed = False
        if not self.allow_duplicates:
            self._refuse_if_taken(ctx, key)
            claimed = self._claim(ctx, key)
        try:
            version, replaced = _put(store, mine, key, local)
        except BaseException:
            if claimed:  # the first put of this path failed: leave nothing behind
                store.release(self._claim_name(key), ctx.name)
            raise
        for k in replaced:
            store.release(self._claim_name(k), ctx.name)
        return version

    def list(
        self, path: str | os.PathLike[str] = ".", component_name: str | None = None
    ) -> builtins.list[str]:
        """Names directly under ``path``, merged across owners (or only ``component_name``'s).

        ``[]`` for an empty drive. Raises ``FileNotFoundError`` if no owner has
        ``path`` and ``NotADirectoryError`` if it is a file.

        Examples:
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

        Examples:
            >>> # drive.get("reports/summary.txt", timeout=30)
        """
        ctx = context.require("Drive.get()")
        key = _key(ctx, path)
        if timeout is not None and not timeout >= 0:
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
                store.drop(mine, k)
                store.release(self._claim_name(k), ctx.name)
                removed = True
        holder = next((q for q in ancestors(key) if q in keys), None)
        if holder is not None:
            latest = store.latest(mine, holder)
            inner = key[len(holder) + 1 :]
            if latest is not None:
                base = store.manifest(latest)
                if base.kind == DIR and base.has(inner):
                    store.record(mine, holder, base.without(inner))
                    store.release(self._claim_name(key), ctx.name)
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

    def _claim_name(self, key: str) -> str:
        return f"{self._work('')}{key}"

    # ``builtins.list``: inside the class, ``list`` is the method above.
    def _owners(self, store: Store, component_name: str | None) -> builtins.list[str]:
        if component_name is not None:
            return [component_name]
        prefix = self._work("")
        return [w[len(prefix) :] for w in store.works() if w.startswith(prefix)]

    def _holders(self, store: Store, key: str, component_name: str | None) -> dict[str, Located]:
        out = {}
        for owner in self._owners(store, component_name):
            found = store.locate(self._work(owner), key)
            if found is not None:
                out[owner] = found
        return out

    def _nothing(self, component_name: str | None) -> str:
        who = f"{component_name} has" if component_name else "no work has"
        return f"{self.id}: {who} put this into the drive"

    def _taken(self, key: str, owners: builtins.list[str]) -> FileExistsError:
        return FileExistsError(
            errno.EEXIST,
            f"{self.id}: already put by {', '.join(owners)} "
            "(use Drive(..., allow_duplicates=True) to keep both)",
            key,
        )

    def _refuse_if_taken(self, ctx: context.WorkContext, key: str) -> None:
        others = sorted(o for o in self._holders(ctx.store, key, None) if o != ctx.name)
        if others:
            raise self._taken(key, others)

    def _claim(self, ctx: context.WorkContext, key: str) -> bool:
        """Own ``key`` through its create-only claim record; ``True`` if newly claimed.

        Of two works putting one new path at once, exactly one creates the claim;
        the other gets ``FileExistsError`` naming it, before writing anything.
        """
        owner, created = ctx.store.claim(self._claim_name(key), ctx.name)
        if owner != ctx.name:
            raise self._taken(key, [owner])
        return created


def _key(ctx: context.WorkContext, path: str | os.PathLike[str], allow_root: bool = False) -> str:
    """The drive path of ``path``: relative to the work root, normalized, never escaping it."""
    key = key_under(ctx.root, path)
    if key == "." and not allow_root:
        raise ValueError("name a file or folder inside the work root, not the root itself")
    return key


def _put(store: Store, work: str, key: str, local: pathlib.Path) -> tuple[Version, list[str]]:
    """Record one version holding ``local`` at ``key`` for the owner ``work``.

    Per owner, stored paths never nest: inside a stored folder the folder gets the
    new version; a folder over stored paths replaces them. Returns the version
    and the stored paths it replaced.
    """
    keys = set(store.paths(work))
    holder = next((q for q in ancestors(key) if q in keys), None)
    if holder is not None:
        return store.snapshot(work, holder, local, at=key[len(holder) + 1 :]), []
    version = store.snapshot(work, key, local)
    replaced = sorted(k for k in keys if k.startswith(key + "/"))
    for k in replaced:
        store.drop(work, k)  # the new snapshot of ``key`` now holds it
    return version, replaced


def _children(store: Store, work: str, key: str) -> set[str] | None:
    """Names directly under ``key`` for one owner; ``None`` if the owner lacks ``key``."""
    found = store.locate(work, key)
    if found is None:
        return None
    names: set[str] = set()
    if found.stored is not None:
        latest = store.latest(work, found.stored)
        if latest is None:
            return None
        sub = store.manifest(latest).subtree(found.inner)
        if sub.kind == FILE:
            raise NotADirectoryError(key)
        names |= {e.path for e in sub.entries if "/" not in e.path}
    for k in found.below:
        rest = k if key == "." else k[len(key) + 1 :]
        names.add(rest.split("/", 1)[0])
    return names


def _checkout(store: Store, work: str, key: str, found: Located, dest: pathlib.Path) -> GetResult:
    if found.stored is not None:
        return store.checkout(work, found.stored, dest, overwrite=True, inner=found.inner)
    # A folder assembled from several puts below it: check each out in place.
    if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest)):
        os.unlink(dest)
    results = []
    for k in found.below:
        rel = k if key == "." else k[len(key) + 1 :]
        results.append(store.checkout(work, k, dest / rel, overwrite=True))
    return GetResult(
        max(r.version for r in results),
        sum(r.files_transferred for r in results),
        sum(r.bytes_transferred for r in results),
    )


__all__ = ["Drive", "drive_work", "normalize_key"]
