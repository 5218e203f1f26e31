"""``App``: names the flow tree, starts each work's process on first use, stops them all."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import sys
import tempfile
from typing import Any

from cas_storage.store import default_url

from .flow import Flow
from .process import Setup, main
from .state import public_state
from .transport import request_timeout
from .work import Work, WorkFailed

#: How often a waiting flow checks that the work process is still alive.
POLL_SECONDS = 0.05


class _Runner:
    """The flow's handle on one work process."""

    def __init__(self, work: Work, setup: Setup) -> None:
        self.work, self.setup = work, setup
        self.process: Any = None
        self.conn: Any = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a threaded parent
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=main, args=(self.setup, self.work, child), name=self.setup.name, daemon=True
        )
        self.process.start()
        child.close()

    def call(self, args: tuple, kwargs: dict) -> None:
        if self.process is None:
            self.start()
        elif not self.process.is_alive():
            raise WorkFailed(self.setup.name, "its process is no longer running")
        self.conn.send(("run", args, kwargs))
        status, *details, state = self._reply()
        self._sync(state)
        if status == "error":
            raise WorkFailed(self.setup.name, details[0])

    def stop(self, timeout: float | None = None) -> None:
        if self.process is None or not self.process.is_alive():
            return
        try:
            self.conn.send(("stop",))
            _, state = self._reply(timeout if timeout is not None else request_timeout())
            self._sync(state)
        except (WorkFailed, OSError):
            pass  # it died on the way out; what it persisted before stays
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def _reply(self, timeout: float | None = None) -> tuple:
        waited = 0.0
        while True:
            if self.conn.poll(POLL_SECONDS):
                try:
                    return self.conn.recv()
                except EOFError:
                    pass
            if not self.process.is_alive():
                raise WorkFailed(
                    self.setup.name,
                    f"its process exited unexpectedly (exit code {self.process.exitcode})",
                )
            waited += POLL_SECONDS
            if timeout is not None and waited > timeout:
                raise WorkFailed(self.setup.name, f"no answer within {timeout:g} s")

    def _sync(self, state: dict[str, Any]) -> None:
        # The flow's view of the work: replace its public attributes with the process's.
        for key in [k for k in public_state(self.work) if k not in state]:
            delattr(self.work, key)
        for key, value in state.items():
            object.__setattr__(self.work, key, value)


class App:
    """An app: a root flow and its works, each work in a process of its own.

    The store is ``store``, else ``$CAS_STORE``, else ``./.cas`` under the
    directory the app is launched from. Work roots live under
    ``./.runtime/<app name>/works/<work name>/``.
    """

    def __init__(self, root: Flow, store: str | None = None, name: str | None = None) -> None:
        if not isinstance(root, Flow):
            raise TypeError(f"App needs a Flow as its root, not {type(root).__name__}")
        self.root = root
        self.name = name or type(root).__name__.lower()
        self.store = store
        self.works: dict[str, Work] = {}

    def run(self) -> None:
        """Run the root flow once; stop every work at the end (each persists its Paths).

        Raises ``WorkFailed`` when a work fails.
        """
        launch = os.getcwd()
        url = self.store or default_url()
        if "://" not in url:
            url = os.path.abspath(url)
        base = os.path.join(launch, ".runtime", self.name)
        sockets = tempfile.mkdtemp(prefix="cas-rt-")  # Unix socket paths must stay short
        authkey = secrets.token_bytes(16)
        for name, component in self.root.components("root"):
            if isinstance(component, Work):
                component._attach(name)
                setup = Setup(
                    name=name,
                    root=os.path.join(base, "works", name),
                    store_url=url,
                    state_file=os.path.join(base, "state", f"{name}.db"),
                    sockets=sockets,
                    authkey=authkey,
                )
                os.makedirs(setup.root, exist_ok=True)
                object.__setattr__(component, "_runner", _Runner(component, setup))
                self.works[name] = component
        _install_quiet_hook()
        try:
            self.root.run()
        finally:
            for work in self.works.values():
                work.stop()
            shutil.rmtree(sockets, ignore_errors=True)


def _install_quiet_hook() -> None:
    """An uncaught ``WorkFailed`` prints its message once, without a local traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):  # type: ignore[no-untyped-def]
        if isinstance(value, WorkFailed):
            print(value, file=sys.stderr)
        else:
            previous(kind, value, tb)

    if getattr(previous, "__name__", "") != "hook":
        sys.excepthook = hook
