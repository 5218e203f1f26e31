"""``Path``: a drop-in ``pathlib.Path`` that knows which work owns the file.

Examples:
    >>> p = Path("lit://outputs/ckpt", origin="root.train")
    >>> str(p), p.origin_name
    ('outputs/ckpt', 'root.train')
    >>> (p / "model.pt").origin_name, p.parent.origin_name
    ('root.train', 'root.train')
"""

from __future__ import annotations

import errno
import os
import pathlib
import sys
from typing import TYPE_CHECKING, Any, cast

from . import context
from .catalog import Version
from .checkout import GetResult
from .keys import LIT_PREFIX, key_under, normalize_key, strip_lit

PREFIX = LIT_PREFIX
if TYPE_CHECKING:  # to a type checker, the concrete class is a pathlib.Path like any other
    _Concrete = pathlib.Path
else:
    _Concrete = type(pathlib.Path())  # PosixPath here; pathlib.Path itself lacks a flavour <3.12


def _strip(arg: Any) -> Any:
    return strip_lit(arg) if isinstance(arg, str) else arg


def _inherited_origin(args: tuple[Any, ...]) -> str:
    for arg in args:
        if isinstance(arg, Path) and arg._origin_name:
            return arg._origin_name
    return ""


class Path(_Concrete):
    """A path relative to its owning work's root, which any other work can ``get()``."""

    _origin_name: str = ""

    def __new__(cls, *args: Any, origin: str | None = None, **kwargs: Any) -> Path:
        args = tuple(_strip(a) for a in args)
        if sys.version_info >= (3, 12):
            self = super().__new__(cls, *args)
        else:
            self = super().__new__(cls, *args, **kwargs)
        self._origin_name = origin if origin is not None else _inherited_origin(args)
        return self

    def __init__(self, *args: Any, origin: str | None = None, **kwargs: Any) -> None:
        if sys.version_info >= (3, 12):
            super().__init__(*(_strip(a) for a in args))
        if origin is not None:
            self._origin_name = origin

    if sys.version_info >= (3, 12):

        def with_segments(self, *segments: Any) -> Path:
            return Path(*segments, origin=self._origin_name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self), self._origin_name))

    def __rtruediv__(self, other: Any) -> Path:
        return Path(other, str(self), origin=self._origin_name)

    def __repr__(self) -> str:
        origin = f", origin={self._origin_name!r}" if self._origin_name else ""
        return f"Path({str(self)!r}{origin})"

    # -- ownership ----------------------------------------------------------
    @property
    def origin_name(self) -> str:
        """Name of the work that owns this path (``""`` when unattached)."""
        return self._origin_name

    def attach(self, origin: str) -> Path:
        """This path, owned by ``origin`` (a new object)."""
        return Path(str(self), origin=origin)

    # -- sharing ------------------------------------------------------------
    def exists_local(self) -> bool:
        """Whether the path exists in the current work's own filesystem."""
        ctx = context.require("Path.exists_local()")
        return os.path.lexists(self._local(ctx))

    def exists_remote(self) -> bool:
        """Whether the origin has the path (asked live if it runs, else from stored versions)."""
        ctx = context.require("Path.exists_remote()")
        origin, key = self._require_origin(), self._key(ctx)
        if ctx.origins is not None and origin != ctx.name:
            try:
                return ctx.origins.exists(origin, key)
            except context.OriginUnavailable:
                pass
        found = ctx.store.locate(origin, key)
        return found is not None and found.stored is not None

    def get(self, overwrite: bool = False, version: int | None = None) -> GetResult:
        """Make the origin's file or folder available here; move only what differs.

        Raises ``FileNotFoundError`` when the origin has no such path and
        ``FileExistsError`` when it exists locally and ``overwrite`` is false.
        """
        ctx = context.require("Path.get()")
        origin, key = self._require_origin(), self._key(ctx)
        dest = self._local(ctx)
        if not overwrite and os.path.lexists(dest):
            raise FileExistsError(
                errno.EEXIST, "exists locally; use get(overwrite=True) to replace it", str(dest)
            )
        stored, inner, number = _locate(ctx, origin, key, version)
        return ctx.store.checkout(origin, stored, dest, number, overwrite=True, inner=inner)

    def versions(self) -> list[Version]:
        """Persisted versions of this path at its origin, oldest first."""
        ctx = context.require("Path.versions()")
        return ctx.store.versions(self._require_origin(), self._key(ctx))

    def store_key(self) -> str:
        """The key this path is stored under: relative to its work's root, normalized.

        Examples:
            >>> Path("lit://outputs/./ckpt/", origin="root.train").store_key()
            'outputs/ckpt'
        """
        return self._key(context.require("Path.store_key()") if os.path.isabs(self) else None)

    # -- helpers ------------------------------------------------------------
    def _require_origin(self) -> str:
        if not self._origin_name:
            raise ValueError(
                f"{self} is not attached to a work: assign 'lit://...' to a Work attribute "
                "or create it with Path(..., origin=work_name)"
            )
        return self._origin_name

    def _key(self, ctx: context.WorkContext | None) -> str:
        return key_under(ctx.root, self) if ctx is not None else normalize_key(self)

    def _local(self, ctx: context.WorkContext) -> pathlib.Path:
        return pathlib.Path(ctx.root) / self._key(ctx)


def _locate(
    ctx: context.WorkContext, origin: str, key: str, version: int | None
) -> tuple[str, str, int | None]:
    """Which stored path and version hold ``key``: ``(stored path, inner path, version)``."""
    if version is None and ctx.origins is not None and origin != ctx.name:
        try:
            live = ctx.origins.snapshot(origin, key)
        except context.OriginUnavailable:
            live = None
        else:
            if live is None:
                raise FileNotFoundError(errno.ENOENT, f"{origin} has no such path", key)
            return live.path, ".", live.number
    found = ctx.store.locate(origin, key)
    if found is None or found.stored is None:
        raise FileNotFoundError(errno.ENOENT, f"{origin} has no stored version of", key)
    return found.stored, found.inner, version


def _rebuild(text: str, origin: str) -> Path:
    return Path(text, origin=origin)


if sys.version_info < (3, 12):
    # No with_segments hook before 3.12: re-attach the origin to whatever the
    # public deriving methods return (pathlib builds those without __init__).
    def _adopt(value: Any, origin: str) -> Any:
        if isinstance(value, Path):
            value._origin_name = origin
        return value

    def _wrap(name: str) -> None:
        base = getattr(_Concrete, name)

        def method(self: Path, *args: Any, **kwargs: Any) -> Any:
            return _adopt(base(self, *args, **kwargs), self._origin_name)

        method.__name__ = name
        method.__doc__ = base.__doc__
        setattr(Path, name, method)

    def _wrap_iter(name: str) -> None:
        base = getattr(_Concrete, name)

        def method(self: Path, *args: Any, **kwargs: Any) -> Any:
            for item in base(self, *args, **kwargs):
                yield _adopt(item, self._origin_name)

        method.__name__ = name
        method.__doc__ = base.__doc__
        setattr(Path, name, method)

    for _name in (
        "__truediv__",
        "joinpath",
        "with_name",
        "with_stem",
        "with_suffix",
        "relative_to",
        "absolute",
        "resolve",
        "expanduser",
        "readlink",
        "rename",
        "replace",
    ):
        _wrap(_name)
    for _name in ("iterdir", "glob", "rglob"):
        _wrap_iter(_name)

    _base_parent = cast(property, _Concrete.parent)
    _base_parents = cast(property, _Concrete.parents)

    def _parent(self: Path) -> Path:
        return cast(Path, _adopt(_base_parent.__get__(self), self._origin_name))

    def _parents(self: Path) -> tuple[Path, ...]:
        return tuple(_adopt(p, self._origin_name) for p in _base_parents.__get__(self))

    Path.parent = property(_parent, doc=_base_parent.__doc__)  # type: ignore[assignment,method-assign]
    Path.parents = property(_parents, doc=_base_parents.__doc__)  # type: ignore[assignment,method-assign]
