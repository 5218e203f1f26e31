"""``Work``: a component that computes in its own process, on its own filesystem."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from .state import adopt, rename_paths

if TYPE_CHECKING:
    from cas_storage import GetResult, Path
from .transport import request_timeout


class WorkFailed(Exception):
    """A work's ``run`` raised, or its process died. Carries the work's traceback text."""

    def __init__(self, work: str, details: str) -> None:
        self.work = work
        self.details = details
        super().__init__(f"work {work} failed:\n{details.rstrip()}")


class Work:
    """Subclass and implement ``run``; the app runs it in a process of its own.

    ``lit://`` strings assigned to attributes become ``Path``s owned by this work.
    Calling ``work.run(...)`` from a flow blocks until the work's ``run`` returns,
    then its public attributes are synced back.

    Examples:
        >>> class Train(Work):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.ckpt = "lit://outputs/ckpt"
        ...     def run(self):
        ...         pass
        >>> type(Train().ckpt).__name__
        'Path'
    """

    _name: str = ""
    _runner: Any = None
    _user_run: Any = None  # the subclass's own run, called in the work's process
    _parallel: bool = False
    _ray_actor_options: dict[str, Any] | None = None

    def __init__(
        self, parallel: bool = False, ray_actor_options: dict[str, Any] | None = None
    ) -> None:
        object.__setattr__(self, "_parallel", bool(parallel))
        object.__setattr__(self, "_ray_actor_options", dict(ray_actor_options or {}))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            # The process calls the user's run; the flow's call goes to the process.
            cls._user_run = cls.__dict__["run"]
            cls.run = Work._dispatch_run  # type: ignore[method-assign]  # by design

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            value = adopt(value, self._name or self._provisional_name())
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: an attribute the work never set.
        if name.startswith("__") or name in ("_token", "_received"):
            raise AttributeError(name)
        who = f"work {self._name}" if self._name else f"{type(self).__name__} work"
        raise AttributeError(
            f"{who} has no attribute {name!r}: its run() never set it "
            f"(or set it to a value that is not shared: JSON-able values and Paths are)"
        )

    def _provisional_name(self) -> str:
        """Owner of Paths assigned before the app names this work; replaced when it does.

        A Path keeps its first owner: handed to another work's ``__init__`` before
        the naming, it still points here, not at the work that holds it.
        """
        token: str | None = vars(self).get("_token")
        if token is None:
            token = f"<unnamed {type(self).__name__} {secrets.token_hex(6)}>"
            object.__setattr__(self, "_token", token)
        return token

    def run(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    def _dispatch_run(self, *args: Any, **kwargs: Any) -> None:
        if self._runner is None:
            raise RuntimeError(
                f"{type(self).__name__}.run() was called outside a running App: "
                "create App(root_flow) and run it"
            )
        if self._parallel:
            self._runner.begin(args, kwargs)
        else:
            self._runner.call(args, kwargs)

    @property
    def parallel(self) -> bool:
        """Whether ``run()`` returns at once while the call goes on in the background."""
        return self._parallel

    @property
    def ray_actor_options(self) -> dict[str, Any]:
        """Options for a Ray executor's actor (``num_cpus``, ``resources``); others ignore them."""
        return dict(self._ray_actor_options or {})

    @property
    def running(self) -> bool:
        """Whether a call of ``run`` executes now; reading it refreshes the attributes."""
        return self._runner is not None and self._runner.running()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running call ends and sync the attributes.

        Raises ``WorkFailed`` if the call failed, ``TimeoutError`` past ``timeout``
        seconds; returns at once when nothing runs.
        """
        if self._runner is not None:
            self._runner.wait(timeout)

    @property
    def name(self) -> str:
        """The work's attribute path in the flow tree, e.g. ``root.train``."""
        return self._name

    def received(self) -> list[tuple[Path, GetResult]]:
        """``(Path, GetResult)`` for each Path argument transferred before this ``run`` began."""
        return list(getattr(self, "_received", []))

    def stop(self) -> None:
        """Persist this work's Paths and end its process."""
        if self._runner is not None:
            self._runner.stop(request_timeout())

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_runner"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def _attach(self, name: str) -> None:
        """Named by the app: Paths created before the name was known get it now.

        Paths that came from other works keep those works' names (``names`` in
        ``rename_provisional``); only still-unowned ones become this work's.
        """
        object.__setattr__(self, "_name", name)
        for key, value in list(vars(self).items()):
            if not key.startswith("_"):
                object.__setattr__(self, key, adopt(value, name))


def rename_provisional(components: list[tuple[str, Any]]) -> None:
    """Give every Path owned by a not-yet-named work (anywhere in the tree) that work's name.

    ``components`` are ``(name, work or flow)`` pairs of one app.
    """
    names = {
        vars(c)["_token"]: name
        for name, c in components
        if isinstance(c, Work) and "_token" in vars(c)
    }
    if not names:
        return
    for _, component in components:
        for key, value in list(vars(component).items()):
            if not key.startswith("_"):
                object.__setattr__(component, key, rename_paths(value, names))
