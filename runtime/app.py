"""``App``: names the flow tree, gives each work a host from the executor, stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import TracebackType

from cas_storage.store import default_url

from . import executor as executors
from .executor import AppSpec
from .flow import Flow
from .runner import Runner
from .transport import request_timeout
from .work import Work, WorkFailed, rename_provisional


class App:
    """An app: a root flow and its works, each work on a host of its own.

    The store is ``store``, else ``$CAS_STORE``, else ``./.cas`` under the
    directory the app is launched from. ``executor`` says where works run:
    ``"local"`` (default; each a process on this machine, roots under
    ``./.runtime/<app name>/works/<work name>/``) or ``"ray"``; without it,
    ``$CAS_EXECUTOR`` decides.
    """

    def __init__(
        self,
        root: Flow,
        store: str | None = None,
        name: str | None = None,
        executor: str | None = None,
    ) -> None:
        if not isinstance(root, Flow):
            raise TypeError(f"App needs a Flow as its root, not {type(root).__name__}")
        self.root = root
        self.name = name or type(root).__name__.lower()
        self.store = store
        self.executor = executors.choose(executor) if executor else None
        self.works: dict[str, Work] = {}

    def run(self) -> None:
        """Run the root flow once; wait for background works; stop every work at the end
        (each persists its Paths).

        Raises ``WorkFailed`` when a work fails.
        """
        url = self.store or default_url()
        if "://" not in url:
            url = os.path.abspath(url)
        executor = executors.load(executors.choose(self.executor))
        executor.open(AppSpec(self.name, os.getcwd(), url, _code_dir(self.root)))
        runners = []
        interrupted = False
        try:
            components = list(self.root.components("root"))
            rename_provisional([("root", self.root), *components])
            for name, component in components:
                if isinstance(component, Work):
                    component._attach(name)
                    runner = Runner(component, name, executor.host(name, component))
                    object.__setattr__(component, "_runner", runner)
                    self.works[name] = component
                    runners.append(runner)
            _install_quiet_hook()
            self.root.run()
            _wait_for(runners)
        except KeyboardInterrupt:
            interrupted = True  # the user is waiting: each stop gets a short deadline
            raise
        finally:
            with _no_interrupts():
                _stop_all(runners, INTERRUPTED_STOP_SECONDS if interrupted else request_timeout())
                executor.close()


#: How long each work may take to persist and stop after a Ctrl-C before its host ends it
#: (the contract: Ctrl-C exits within a few seconds). Other endings wait the request timeout.
INTERRUPTED_STOP_SECONDS = 10.0


def _code_dir(root: Flow) -> str:
    """The folder of the module that defines the root flow's class ("" if it has no file)."""
    filename = getattr(sys.modules.get(type(root).__module__), "__file__", None)
    return os.path.dirname(os.path.abspath(filename)) if filename else ""


def _wait_for(runners: list[Runner]) -> None:
    """Wait for every background call still running; then raise the first failure."""
    failures = []
    for runner in runners:
        try:
            runner.wait()
        except WorkFailed as failure:
            failures.append(failure)
    if failures:
        raise failures[0]


def _stop_all(runners: list[Runner], timeout: float) -> None:
    """Stop every work at once (each persists), not one after another.

    A work that has not answered its stop within ``timeout`` is terminated by its host.
    """
    threads = [
        threading.Thread(target=runner.stop, args=(timeout,), name=f"stop {runner.name}")
        for runner in runners
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """A second Ctrl-C must not cut short the stop that persists every work."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _install_quiet_hook() -> None:
    """An uncaught ``WorkFailed`` prints its message once, without a local traceback."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, WorkFailed):
            print(value, file=sys.stderr)
        else:
            previous(kind, value, tb)

    if getattr(previous, "__name__", "") != "hook":
        sys.excepthook = hook
