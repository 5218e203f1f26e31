"""The executor seam: where works run, and how they reach each other.

The app and the flow talk to a work only through a :class:`Host`; a work reaches
other running works only through ``cas_storage.context.Origins``. An
:class:`Executor` makes both. Two implementations exist:

* ``local`` (:mod:`runtime.local`): each work a spawned process on this machine,
  driven over a pipe; live-origin requests over Unix sockets.
* ``ray`` (``runtime/ray_executor.py``, class ``RayExecutor``): each work a Ray
  actor. Imported only when selected, so the local executor never imports Ray.

Selecting one: ``python -m runtime run app.py --executor NAME``, else
``App(root, executor=NAME)``, else ``$CAS_EXECUTOR``, else ``local``.

Writing an executor
-------------------
Everything a work does inside its host is executor-independent and lives in
:class:`runtime.worker.WorkRuntime`: build it in the host (process or actor) with
the work's name, private root, store URL, stat-cache file and an ``Origins``; it
installs the work context and ``chdir``s to the root. Then forward to it:

=====================  ======================================================
host side               ``WorkRuntime`` method
=====================  ======================================================
run one call            ``run(args, kwargs) -> Outcome`` (fetches inputs,
                        runs the user's ``run``, persists; never raises)
live public state       ``state() -> dict`` (safe while ``run`` executes)
another work's request  ``answer(op, key)`` — must be served *while* ``run``
                        executes (a thread, or a Ray concurrency group)
stop                    ``close()`` — persists every owned Path
=====================  ======================================================

Every value crossing the seam is picklable: the work object itself (pickled once
to start the host; ``Work.__getstate__`` leaves the flow's handle out), ``run``
arguments, :class:`Outcome` and the state dict (JSON-able values and
``cas_storage`` objects such as ``Path``).

An ``Origins`` implementation turns ``snapshot(origin, key)`` /
``exists(origin, key)`` into ``answer("snapshot"|"exists", key)`` on the origin's
host, with ``runtime.transport.request_timeout()``; it raises
``OriginUnavailable`` when the origin is not running (the caller then reads
persisted versions) and ``runtime.transport.OriginError`` when a running origin
dies, times out or raises.

A work's per-executor options travel on the work: ``work.ray_actor_options``
(``Work(ray_actor_options={...})``), which the local executor ignores.
"""

from __future__ import annotations

import importlib
import os
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .work import Work

#: Executor name -> (module, class). Modules are imported only when selected.
EXECUTORS: dict[str, tuple[str, str]] = {
    "local": ("runtime.local", "LocalExecutor"),
    "ray": ("runtime.ray_executor", "RayExecutor"),
}

DEFAULT_EXECUTOR = "local"


@dataclass(frozen=True)
class Outcome:
    """How one call of a work's ``run`` ended (picklable).

    ``failure`` is the traceback text when it raised (or why the host is gone);
    ``state`` the work's public attributes afterwards, ``None`` when the host
    could not report them (it died).
    """

    failure: str | None
    state: dict[str, Any] | None


@dataclass(frozen=True)
class AppSpec:
    """What an executor knows about the app it hosts works for."""

    name: str  # the app's name, e.g. "root"
    launch_dir: str  # where the app was launched (work roots live below it, locally)
    store_url: str  # absolute local path or fsspec URL, the same for every work
    #: The folder of the module defining the root flow: the app's code, which an
    #: executor on several machines ships to them ("" when unknown).
    code_dir: str = ""


class UnknownExecutor(ValueError):
    """No executor has this name."""


class ExecutorUnavailable(RuntimeError):
    """The selected executor cannot be loaded here (not installed, not written yet)."""


class StartFailed(Exception):
    """A work's host could not be started (the work cannot be pickled, imported, ...)."""


class Host(ABC):
    """The app's handle on one work's host (a process, an actor).

    One call runs at a time; the app never calls ``begin`` while a call is
    running, and never calls anything but ``start`` before ``start``.
    """

    @abstractmethod
    def start(self) -> None:
        """Start the host and wait until it is ready to run.

        Raises ``StartFailed`` with a reason that a user can act on.
        """

    @abstractmethod
    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Start one call of the work's ``run``; return at once."""

    @abstractmethod
    def result(self, timeout: float | None) -> Outcome | None:
        """The outcome of the call begun last, waiting up to ``timeout`` seconds
        (``0`` polls, ``None`` waits as long as it takes).

        ``None`` while the call still runs. A host that died mid-call gives an
        ``Outcome`` whose ``failure`` says so and whose ``state`` is ``None``.
        """

    @abstractmethod
    def state(self) -> dict[str, Any] | None:
        """The work's public attributes right now (also while a call runs);
        ``None`` when the host is gone."""

    @abstractmethod
    def stop(self, timeout: float) -> dict[str, Any] | None:
        """Interrupt a running call, persist every owned Path, end the host.

        Waits up to ``timeout`` seconds, then ends it by force. Returns the final
        public state, or ``None`` when the host had died or did not answer.
        """

    @abstractmethod
    def alive(self) -> bool:
        """Whether the host is running."""

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
        """One blocking call: ``begin`` then wait for its ``result``."""
        self.begin(args, kwargs)
        outcome = self.result(None)
        assert outcome is not None  # result(None) waits for the end
        return outcome


class Executor(ABC):
    """Makes hosts for the works of one app run."""

    name: str = ""

    def open(self, app: AppSpec) -> None:  # noqa: B027 - optional hook
        """Prepare app-wide resources (a socket folder, a cluster connection).

        Called once before any host is made; may refuse the app (e.g. a local
        store on a cluster of several machines) by raising ``StartFailed``.
        """

    @abstractmethod
    def host(self, name: str, work: Work) -> Host:
        """A host for the work named ``name``; not started yet."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``open`` acquired; every host is stopped by then."""


def choose(explicit: str | None = None) -> str:
    """The executor name: ``explicit``, else ``$CAS_EXECUTOR``, else ``local``.

    >>> choose("local")
    'local'
    """
    name = explicit or os.environ.get("CAS_EXECUTOR") or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        known = ", ".join(sorted(EXECUTORS))
        raise UnknownExecutor(f"unknown executor {name!r} (choose one of: {known})")
    return name


def load(name: str) -> Executor:
    """A new executor called ``name``, importing its module only now."""
    module_name, class_name = EXECUTORS[choose(name)]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as missing:
        if missing.name == module_name:
            raise ExecutorUnavailable(
                f"the {name} executor is not available in this version "
                f"({module_name} does not exist yet)"
            ) from None
        if missing.name is not None and missing.name.split(".")[0] == "ray":
            raise ExecutorUnavailable(
                f"the {name} executor needs Ray: pip install 'cas_storage[ray]'"
            ) from None
        raise
    executor: Executor = getattr(module, class_name)()
    return executor


def pickled(work: Work) -> bytes:
    """The work as bytes to start its host with; ``StartFailed`` naming the attribute
    that cannot be pickled (a lock, an open file, a lambda ...)."""
    try:
        return pickle.dumps(work)
    except Exception as exc:
        state = work.__getstate__()
        culprit = next((key for key, value in state.items() if not _picklable(value)), None)
        where = f" (its attribute {culprit!r})" if culprit else ""
        raise StartFailed(
            f"it cannot be sent to its host: pickling it failed{where}: {type(exc).__name__}: {exc}"
        ) from None


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True
