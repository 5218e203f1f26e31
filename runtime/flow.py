"""``Flow``: orchestrates works and child flows; never touches files itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .work import Work


class Flow:
    """Subclass, hold works and flows as attributes, implement ``run``.

    Examples:
        >>> class Root(Flow):
        ...     def run(self):
        ...         pass
        >>> list(Root().components("root"))
        []
    """

    def run(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    def components(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """``(name, work or flow)`` for everything below this flow, depth first."""
        for attr, value in vars(self).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, Work):
                yield f"{prefix}.{attr}", value
            elif isinstance(value, Flow):
                yield f"{prefix}.{attr}", value
                yield from value.components(f"{prefix}.{attr}")
