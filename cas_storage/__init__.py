"""cas_storage: share files between the works of an app through a content-addressed store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .catalog import Version
from .checkout import GetResult
from .errors import CasError, CorruptObject, MissingObject, UnknownVersion
from .manifest import Entry, Manifest
from .store import Store

if TYPE_CHECKING:
    from .drive import Drive
    from .path import Path

__all__ = [
    "CasError",
    "CorruptObject",
    "Drive",
    "Entry",
    "GetResult",
    "Manifest",
    "MissingObject",
    "Path",
    "Store",
    "UnknownVersion",
    "Version",
]
__version__ = "0.1.0"

#: Imported on first use: ``cas`` commands that never touch a drive or a work's
#: paths should not pay for loading them at start-up.
_LAZY = {"Drive": ".drive", "Path": ".path"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
