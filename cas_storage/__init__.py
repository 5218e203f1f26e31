"""cas_storage: share files between the works of an app through a content-addressed store."""

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
