"""The one seam a runtime fills in: which work is running here, its root, the store,
and how to reach other works while they run.

``cas_storage`` never imports a runtime. A runtime installs a ``WorkContext`` in
each work process (``install(ctx)``); ``Path`` and ``Drive`` read it. Without
one, the operations that touch files refuse with ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .catalog import Version
    from .store import Store


class OriginUnavailable(Exception):
    """The origin work is not running; answer from persisted versions instead."""


class Origins(Protocol):
    """How a work reaches other, running works (implemented by the runtime)."""

    def snapshot(self, origin: str, path: str) -> Version | None:
        """Ask the running ``origin`` to snapshot ``path`` now.

        Returns the version (``None`` when the origin has no such path) or
        raises ``OriginUnavailable`` when the origin is not running.
        """
        ...

    def exists(self, origin: str, path: str) -> bool:
        """Whether the running ``origin`` has ``path``; ``OriginUnavailable`` if not running."""
        ...


@dataclass
class WorkContext:
    """What a work process knows about itself."""

    name: str
    root: pathlib.Path
    store: Store
    origins: Origins | None = None


_current: WorkContext | None = None


def install(ctx: WorkContext | None) -> None:
    """Make ``ctx`` the context of this process (``None`` removes it)."""
    global _current
    _current = ctx


def current() -> WorkContext | None:
    return _current


def require(operation: str) -> WorkContext:
    """The current context, or ``RuntimeError`` explaining where ``operation`` works."""
    if _current is None:
        raise RuntimeError(
            f"{operation} only works inside a running Work: it reads and writes that work's "
            "files (a Flow never touches files, and outside an app there is no work)"
        )
    return _current


@contextlib.contextmanager
def installed(ctx: WorkContext) -> Iterator[WorkContext]:
    """Install ``ctx`` for the duration of a ``with`` block (tests, embedding).

    >>> from cas_storage import context
    >>> context.current() is None
    True
    """
    previous = _current
    install(ctx)
    try:
        yield ctx
    finally:
        install(previous)
