"""``Work``: a component that computes in its own process, on its own filesystem."""

from __future__ import annotations

from typing import Any

from .state import adopt


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

    def __init__(self, parallel: bool = False) -> None:
        if parallel:
            raise NotImplementedError("Work(parallel=True) is planned, not yet available")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            # The process calls the user's run; the flow's call goes to the process.
            cls._user_run = cls.__dict__["run"]
            cls.run = Work._dispatch_run

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            value = adopt(value, self._name)
        object.__setattr__(self, name, value)

    def run(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    def _dispatch_run(self, *args: Any, **kwargs: Any) -> None:
        if self._runner is None:
            raise RuntimeError(
                f"{type(self).__name__}.run() was called outside a running App: "
                "create App(root_flow) and run it"
            )
        self._runner.call(args, kwargs)

    @property
    def name(self) -> str:
        """The work's attribute path in the flow tree, e.g. ``root.train``."""
        return self._name

    def received(self) -> list:
        """``(Path, GetResult)`` for each Path argument transferred before this ``run`` began."""
        return list(getattr(self, "_received", []))

    def stop(self) -> None:
        """Persist this work's Paths and end its process."""
        if self._runner is not None:
            self._runner.stop()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_runner"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def _attach(self, name: str) -> None:
        """Named by the app: Paths created before the name was known get it now."""
        object.__setattr__(self, "_name", name)
        for key, value in list(vars(self).items()):
            if not key.startswith("_"):
                object.__setattr__(self, key, adopt(value, name))
