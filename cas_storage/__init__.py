"""cas_storage: share files between the works of an app through a content-addressed store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Version
    from .checkout import GetResult
    from .drive import Drive
    from .errors import CasError, CorruptObject, MissingObject, UnknownVersion
    from .manifest import Entry, Manifest
    from .path import Path
    from .store import Store

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

#: Where each public name lives, imported on first use: importing any submodule runs
#: this file first, and ``cas --help`` (which imports ``cas_storage.cli``) should not
#: pay for loading the store, the catalog and the checkout code it never calls.
_LAZY = {
    "CasError": ".errors",
    "CorruptObject": ".errors",
    "Drive": ".drive",
    "Entry": ".manifest",
    "GetResult": ".checkout",
    "Manifest": ".manifest",
    "MissingObject": ".errors",
    "Path": ".path",
    "Store": ".store",
    "UnknownVersion": ".errors",
    "Version": ".catalog",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
