"""What of a work's attributes is shared: ``lit://`` strings become Paths; the public,
shareable values travel between the flow and the work process."""

from __future__ import annotations

import json
import pickle
from typing import Any

from cas_storage import Path
from cas_storage.path import PREFIX


def adopt(value: Any, owner: str) -> Any:
    """``value`` as it should be stored on work ``owner``: ``lit://`` strings become Paths."""
    if isinstance(value, str) and value.startswith(PREFIX):
        return Path(value, origin=owner)
    if isinstance(value, Path) and not value.origin_name:
        return value.attach(owner) if owner else value
    return value


def rename_paths(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every Path whose origin is a key of ``names`` owned by its value.

    Looks through lists, tuples and dict values; returns ``value`` itself when
    nothing in it changes.
    """
    if isinstance(value, Path):
        owner = names.get(value.origin_name)
        return value.attach(owner) if owner is not None else value
    if isinstance(value, dict):
        renamed = {key: rename_paths(item, names) for key, item in value.items()}
        changed = any(renamed[key] is not item for key, item in value.items())
        return renamed if changed else value
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):  # not namedtuples
        items = [rename_paths(item, names) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    return value


def is_shareable(value: Any) -> bool:
    """JSON-able values, Paths and other picklable cas_storage objects (e.g. a Drive)."""
    if type(value).__module__.startswith("cas_storage"):
        try:
            pickle.dumps(value)
        except Exception:
            return False
        return True
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def public_state(obj: Any) -> dict[str, Any]:
    """The attributes a work shares: public names with shareable values."""
    return {
        name: value
        for name, value in vars(obj).items()
        if not name.startswith("_") and is_shareable(value)
    }


def owned_paths(state: dict[str, Any], owner: str) -> list[Path]:
    """Paths in ``state`` (also inside lists, tuples and dicts) that ``owner`` owns."""
    return [p for p in find_paths(state) if p.origin_name == owner]


def find_paths(value: Any) -> list[Path]:
    """Every Path inside ``value``, looking through lists, tuples, sets and dict values."""
    if isinstance(value, Path):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in find_paths(v)]
    if isinstance(value, list | tuple | set | frozenset):
        return [p for v in value for p in find_paths(v)]
    return []
