"""The Ray executor: each work a Ray actor, placed by Ray on any node of a cluster.

Selected with ``App(root, executor="ray")``, ``$CAS_EXECUTOR=ray`` or ``python -m
runtime run app.py --executor ray``; this module (and Ray) is imported only then.

- The app connects to the cluster ``$RAY_ADDRESS`` names, else starts a Ray of its
  own on this machine (every socket on loopback). When it connects it ships the
  app's code folder (Ray's ``runtime_env`` ``working_dir``), so any node imports
  the works' classes; ``cas_storage`` itself must be installed on every node.
- One named actor per work (the work's name, in a namespace of this app run),
  ``max_restarts=0``, created with the work's ``ray_actor_options`` as given. The
  store URL travels with the work; ``CAS_STORE``, ``CAS_RUNTIME_TIMEOUT`` and the
  ``AWS_*`` credentials of the app's environment reach the actor through
  ``runtime_env`` ``env_vars``.
- Inside the actor the work runs in :class:`runtime.worker.WorkRuntime`, like on
  every executor. The user's ``run`` executes in the actor's default concurrency
  group (one call at a time); other works' requests (group ``requests``) and the
  app's state and stop calls (group ``control``) are served meanwhile, on
  threads of their own.
- A work's root is on the node its actor runs on: on the node the app was
  launched from, the local executor's ``<launch>/.runtime/<app>/works/<work>``;
  on any other node ``<roots>/<app>-<launch id>/works/<work>``, where ``<roots>``
  is ``$CAS_WORK_ROOTS`` as that node's Ray processes see it, else
  ``<temp dir>/cas-runtime``. Re-running an app from the same place finds its
  roots (and their stat caches) again.
- Works on several nodes need a store they all reach: a local store path with a
  cluster of more than one node is refused before any work starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pickle
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cas_storage.catalog import Version
from cas_storage.context import OriginUnavailable

from .executor import AppSpec, Executor, Host, Outcome, StartFailed, pickled
from .transport import OriginError, request_timeout
from .work import Work
from .worker import Interrupted, WorkRuntime

#: Actor options the runtime sets itself; a work's ``ray_actor_options`` may not.
RESERVED_OPTIONS = frozenset(
    {
        "name",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_restarts",
        "max_task_retries",
        "max_concurrency",
        "concurrency_groups",
    }
)

#: The app's environment that every work's actor gets: the store and its credentials.
FORWARDED_NAMES = ("CAS_STORE", "CAS_RUNTIME_TIMEOUT")
FORWARDED_PREFIXES = ("AWS_",)

#: Never shipped with the app's code: stores, work roots, environments, caches.
CODE_EXCLUDES = [".cas", ".runtime", ".git", ".venv", "__pycache__", "*.pyc"]

#: Threads an actor answers other works' requests on, while its ``run`` executes.
REQUEST_THREADS = 8

#: Seconds a work's actor may take to be placed and started: ``$CAS_RAY_START_TIMEOUT`` or this.
START_TIMEOUT = 120.0


def start_timeout() -> float:
    return float(os.environ.get("CAS_RAY_START_TIMEOUT", START_TIMEOUT))


def is_local_store(url: str) -> bool:
    """Whether ``url`` is a folder on one machine (a path or ``file://``), not a shared store.

    >>> is_local_store("/work/.cas"), is_local_store("s3://bucket/cas")
    (True, False)
    """
    return "://" not in url or url.startswith("file://")


@dataclass(frozen=True)
class RaySetup:
    """Everything a work's actor needs, sent once when it is created."""

    name: str
    namespace: str
    store_url: str
    launch_node: str  # Ray node id of the app's own node
    launch_base: str  # <launch>/.runtime/<app>: the base on the app's node
    node_folder: str  # <app>-<launch id>: the base's name under <roots> on other nodes

    def base(self) -> str:
        """The folder holding this work's root and stat cache, on the node running it."""
        if ray.get_runtime_context().get_node_id() == self.launch_node:
            return self.launch_base
        roots = os.environ.get("CAS_WORK_ROOTS") or os.path.join(
            tempfile.gettempdir(), "cas-runtime"
        )
        return os.path.join(roots, self.node_folder)


class RayOrigins:
    """``cas_storage.context.Origins`` over actor calls, each within the request timeout."""

    def __init__(self, namespace: str, timeout: float | None = None) -> None:
        self.namespace = namespace
        self.timeout = timeout if timeout is not None else request_timeout()

    def snapshot(self, origin: str, path: str) -> Version | None:
        version: Version | None = self._ask(origin, "snapshot", path)
        return version

    def exists(self, origin: str, path: str) -> bool:
        return bool(self._ask(origin, "exists", path))

    def _ask(self, origin: str, op: str, path: str) -> Any:
        actor = self._running(origin)
        try:
            return ray.get(actor.answer.remote(op, path), timeout=self.timeout)
        except GetTimeoutError:
            raise OriginError(
                f"{origin} did not answer {op} of {path!r} within {self.timeout:g} s"
            ) from None
        except RayActorError:
            raise OriginError(f"{origin} stopped while answering {op} of {path!r}") from None
        except RayTaskError as failed:
            cause = failed.cause
            raise OriginError(
                f"{origin} failed to {op} {path!r}: {type(cause).__name__}: {cause}"
            ) from None

    def _running(self, origin: str) -> Any:
        """The origin's actor if it runs; ``OriginUnavailable`` if it never started or is gone."""
        try:
            actor = ray.get_actor(origin, namespace=self.namespace)
        except ValueError:
            raise OriginUnavailable(origin) from None
        try:  # a dead actor's name may still resolve for a moment: ask it
            where = ray.get(actor.where.remote(), timeout=self.timeout)
        except RayActorError:
            raise OriginUnavailable(origin) from None
        except GetTimeoutError:
            raise OriginError(f"{origin} did not answer within {self.timeout:g} s") from None
        if not where["installed"]:  # its actor is up, but the work never ran yet
            raise OriginUnavailable(origin)
        return actor


class _WorkActor:
    """One work inside its actor. Methods outside the default group run beside ``run``."""

    def __init__(self, setup: RaySetup) -> None:
        self.setup = setup
        self.name = setup.name
        self.base = setup.base()
        self.root = os.path.join(self.base, "works", setup.name)
        self.runtime: WorkRuntime | None = None  # the work, once the app sends it
        self.run_thread: int | None = None  # the thread executing a call, while one runs

    def install(self, payload: bytes) -> None:
        """Receive the work (at its first use, as the flow has it then) and set it up."""
        self.runtime = WorkRuntime(
            self.name,
            pickle.loads(payload),
            self.root,
            self.setup.store_url,
            os.path.join(self.base, "state", f"{self.name}.db"),
            RayOrigins(self.setup.namespace),
        )

    def __repr__(self) -> str:  # Ray prefixes the actor's printed lines with this
        return self.name

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
        assert self.runtime is not None, "install() first"
        self.run_thread = threading.get_ident()
        try:
            return self.runtime.run(args, kwargs)
        except Interrupted:  # a stop landed just after the user's run: stop() persists
            return Outcome(f"work {self.name} was stopped", None)
        finally:
            self.run_thread = None

    @ray.method(concurrency_group="requests")
    def answer(self, op: str, key: str) -> Any:
        if self.runtime is None:
            raise OriginUnavailable(self.name)
        return self.runtime.answer(op, key)

    @ray.method(concurrency_group="control")
    def where(self) -> dict[str, Any]:
        """Where this work runs: node id, root, pid, whether it has its work (the probe)."""
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "root": self.root,
            "pid": os.getpid(),
            "installed": self.runtime is not None,
        }

    @ray.method(concurrency_group="control")
    def state(self) -> dict[str, Any]:
        assert self.runtime is not None, "install() first"
        return self.runtime.state()

    @ray.method(concurrency_group="control")
    def stop(self) -> dict[str, Any]:
        """Interrupt a running call, wait for it to end, persist; the app then kills us."""
        assert self.runtime is not None, "install() first"
        self.runtime.stop_requested = True
        thread = self.run_thread
        if thread is not None and self.runtime.in_user_code and not self.runtime.interrupted:
            self.runtime.interrupted = True
            _raise_in_thread(thread, Interrupted)
        while self.run_thread is not None:
            time.sleep(0.01)
        self.runtime.close()
        return self.runtime.state()


def _raise_in_thread(thread_id: int, kind: type[BaseException]) -> None:
    """Raise ``kind`` in another thread at its next Python instruction (a blocking C call
    finishes first; a stop that waits too long ends the actor by force)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(kind))


#: The actor class (Ray's ``remote`` is typed without ``concurrency_groups``).
WorkActor: Any = cast(Any, ray.remote)(
    concurrency_groups={"requests": REQUEST_THREADS, "control": 2},
)(_WorkActor)


class RayHost(Host):
    """The app's handle on one work's actor."""

    def __init__(self, setup: RaySetup, work: Work, options: dict[str, Any]) -> None:
        self.setup, self.work, self.options = setup, work, options
        self.actor: Any = None  # the started actor
        self.pending: Any = None  # an actor made in advance, not sent its work yet
        self.call_ref: Any = None
        #: Where the actor runs (``node``, ``root``, ``pid``), once started.
        self.where: dict[str, Any] = {}

    def prestart(self) -> None:
        """Create the actor now: Ray places and starts it meanwhile, and ``start`` (at the
        work's first use) only sends the work. Errors wait for ``start`` to report them."""
        with contextlib.suppress(ValueError, TypeError):
            self.pending = WorkActor.options(**self.options).remote(self.setup)

    def start(self) -> None:
        payload = _payload(self.work)
        actor, self.pending = self.pending, None
        if actor is None:
            try:
                actor = WorkActor.options(**self.options).remote(self.setup)
            except (ValueError, TypeError) as refused:
                raise StartFailed(f"Ray refused its actor options: {refused}") from None
        timeout = start_timeout()
        try:
            ray.get(actor.install.remote(payload), timeout=timeout)
            self.where = ray.get(actor.where.remote(), timeout=timeout)
        except GetTimeoutError:
            ray.kill(actor)
            raise StartFailed(
                f"Ray placed no actor for it within {timeout:g} s: does a node of the cluster "
                f"offer what its ray_actor_options ask for ({self.work.ray_actor_options})?"
            ) from None
        except RayActorError as failed:
            raise StartFailed(f"its actor failed to start:\n{failed}") from None
        except RayTaskError as failed:
            ray.kill(actor)
            raise StartFailed(f"it failed to start in its actor:\n{failed}") from None
        self.actor = actor

    def discard(self) -> None:
        """End an actor made in advance for a work that never ran."""
        if self.pending is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.pending)
            self.pending = None

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.call_ref = self.actor.run.remote(args, kwargs)

    def result(self, timeout: float | None) -> Outcome | None:
        ready, _ = ray.wait([self.call_ref], timeout=timeout)
        if not ready:
            return None
        ref, self.call_ref = self.call_ref, None
        try:
            outcome: Outcome = ray.get(ref)
        except RayActorError as died:
            return Outcome(f"its actor's process exited unexpectedly ({_reason(died)})", None)
        except RayTaskError as failed:
            return Outcome(str(failed), None)
        return outcome

    def state(self) -> dict[str, Any] | None:
        if self.actor is None:
            return None
        try:
            state: dict[str, Any] = ray.get(self.actor.state.remote(), timeout=request_timeout())
        except (RayActorError, GetTimeoutError):
            return None
        return state

    def stop(self, timeout: float) -> dict[str, Any] | None:
        if self.actor is None:
            return None
        final: dict[str, Any] | None = None
        with contextlib.suppress(RayActorError, RayTaskError, GetTimeoutError):
            final = ray.get(self.actor.stop.remote(), timeout=timeout)
        ray.kill(self.actor)  # ends its process; what it persisted stays
        return final

    def alive(self) -> bool:
        if self.actor is None:
            return False
        try:
            ray.get(self.actor.where.remote(), timeout=request_timeout())
        except (RayActorError, GetTimeoutError):
            return False
        return True


def _payload(work: Work) -> bytes:
    """The work as bytes for its actor. A class defined in the app's main script travels
    by value (Ray's cloudpickle, with the globals it uses): a node's ``__main__`` is Ray's
    worker, not the script. Other classes travel by reference, as with the local executor."""
    if type(work).__module__ != "__main__":
        return pickled(work)
    try:
        return bytes(ray.cloudpickle.dumps(work))  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise StartFailed(
            f"its class is defined in the app's main script, so it must travel to its actor "
            f"by value, with the globals it uses, and pickling that failed: "
            f"{type(exc).__name__}: {exc} (define the work in a module beside the script)"
        ) from None


def _reason(died: RayActorError) -> str:
    """The first line of Ray's account of an actor's death."""
    lines = [line.strip() for line in str(died).splitlines() if line.strip()]
    return lines[0] if lines else type(died).__name__


class RayExecutor(Executor):
    """Works as Ray actors on the cluster ``$RAY_ADDRESS`` names, else on a local Ray."""

    name = "ray"

    def __init__(self) -> None:
        self.app: AppSpec | None = None
        self.namespace = ""
        self.launch_node = ""
        self.connected_here = False  # we called ray.init, so we shut it down
        self.printed: _PrintedLines | None = None
        self.hosts: list[RayHost] = []

    def open(self, app: AppSpec) -> None:
        self.app = app
        self.namespace = f"cas-{app.name}-{secrets.token_hex(4)}"
        if not ray.is_initialized():
            _connect(app.code_dir, self.namespace)
            self.connected_here = True
            self.printed = _PrintedLines.watch()
        nodes = [node for node in cast(Any, ray).nodes() if node.get("Alive")]
        if len(nodes) > 1 and is_local_store(app.store_url):
            self.close()
            raise StartFailed(
                f"the store {app.store_url} is a folder on this machine, but the Ray cluster "
                f"has {len(nodes)} nodes and works on the others cannot reach it: use a store "
                "every node can reach (an s3:// URL in CAS_STORE or App(store=...))"
            )
        self.launch_node = ray.get_runtime_context().get_node_id()

    def host(self, name: str, work: Work) -> Host:
        assert self.app is not None, "open() first"
        launch_base = os.path.join(self.app.launch_dir, ".runtime", self.app.name)
        launch_id = hashlib.sha256(f"{self.launch_node}\0{launch_base}".encode()).hexdigest()
        setup = RaySetup(
            name=name,
            namespace=self.namespace,
            store_url=self.app.store_url,
            launch_node=self.launch_node,
            launch_base=launch_base,
            node_folder=f"{self.app.name}-{launch_id[:12]}",
        )
        try:
            options = actor_options(name, work.ray_actor_options, self.namespace)
        except ValueError as refused:
            raise StartFailed(str(refused)) from None
        host = RayHost(setup, work, options)
        host.prestart()  # every work's actor starts at once, in parallel
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.discard()
        if self.connected_here:
            if self.printed is not None:
                self.printed.drain()
                self.printed = None
            ray.shutdown()
            self.connected_here = False


class _PrintedLines:
    """When Ray last forwarded a line that an actor printed.

    Ray forwards the works' output asynchronously (each node's log monitor tails
    the actors' files), so the last lines of a run may still be on their way when
    the app ends; the app waits for the stream to go quiet before disconnecting.
    """

    QUIET = 1.0  # seconds without a line, counted from the drain's start at the earliest
    LIMIT = 5.0  # seconds a drain waits at most

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.last = time.monotonic()

    @classmethod
    def watch(cls) -> _PrintedLines | None:
        try:  # Ray's own hook for forwarded lines; without it, the app ends at once
            from ray._private.ray_logging import global_worker_stdstream_dispatcher
        except ImportError:
            return None
        watcher = cls(global_worker_stdstream_dispatcher)
        global_worker_stdstream_dispatcher.add_handler("cas-printed-lines", watcher.seen)
        return watcher

    def seen(self, data: Any) -> None:
        self.last = time.monotonic()

    def drain(self) -> None:
        start = time.monotonic()
        while time.monotonic() - start < self.LIMIT:
            if time.monotonic() - max(self.last, start) >= self.QUIET:
                break
            time.sleep(0.05)
        self.dispatcher.remove_handler("cas-printed-lines")


def actor_options(work: str, given: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The work's ``ray_actor_options`` as given, plus the name, namespace, no restarts
    and the forwarded environment (a ``runtime_env`` of the work's own keeps its values).

    >>> actor_options("root.train", {"num_cpus": 1}, "ns")["name"]
    'root.train'
    """
    reserved = sorted(RESERVED_OPTIONS & set(given))
    if reserved:
        raise ValueError(
            f"work {work}: ray_actor_options may not set {', '.join(reserved)} "
            "(the runtime sets them for each work's actor)"
        )
    runtime_env = dict(given.get("runtime_env") or {})
    runtime_env["env_vars"] = {**forwarded_environment(), **runtime_env.get("env_vars", {})}
    return {
        **given,
        "name": work,
        "namespace": namespace,
        "max_restarts": 0,
        "runtime_env": runtime_env,
    }


def forwarded_environment() -> dict[str, str]:
    """The variables of this process that every work's actor gets."""
    return {
        key: value
        for key, value in os.environ.items()
        if key in FORWARDED_NAMES or key.startswith(FORWARDED_PREFIXES)
    }


def _connect(code_dir: str, namespace: str) -> None:
    """Connect to ``$RAY_ADDRESS``, else start a Ray on this machine, shipping the code."""
    runtime_env = {"working_dir": code_dir, "excludes": CODE_EXCLUDES} if code_dir else None
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, namespace=namespace, runtime_env=runtime_env)
        else:
            ray.init(
                address="local",
                namespace=namespace,
                runtime_env=runtime_env,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",  # a Ray of our own: nothing beyond this machine
            )
    except Exception as failed:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise StartFailed(f"could not start {where}: {type(failed).__name__}: {failed}") from None
