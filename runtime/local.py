"""The local executor: each work a spawned process on this machine.

The app drives a work's process over a pipe; other works reach it over a Unix
socket (``runtime.transport``), answered on threads of their own, so requests
are served while ``run`` executes. Work roots are
``<launch dir>/.runtime/<app>/works/<work name>/``.

Inside the process the main thread runs the user's ``run``; a reader thread
answers state requests at once and turns a stop into an ``Interrupted``
exception raised in the running ``run`` (by a SIGTERM to the main thread), so a
stop takes effect within moments and the work still persists.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from .executor import AppSpec, Executor, Host, Outcome, StartFailed, pickled
from .transport import LiveOrigins, Server, request_timeout, socket_path
from .work import Work
from .worker import Interrupted, WorkRuntime

#: How often a waiting app checks that a work process is still alive.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Setup:
    """Everything a work process needs, sent once when it starts."""

    name: str
    root: str
    store_url: str
    state_file: str
    sockets: str
    authkey: bytes


class LocalExecutor(Executor):
    """Works as local processes, started with ``spawn`` (never fork a threaded parent)."""

    name = "local"

    def __init__(self) -> None:
        self.base = ""
        self.store_url = ""
        self.sockets = ""
        self.authkey = b""

    def open(self, app: AppSpec) -> None:
        self.base = os.path.join(app.launch_dir, ".runtime", app.name)
        self.store_url = app.store_url
        self.sockets = tempfile.mkdtemp(prefix="cas-rt-")  # Unix socket paths must stay short
        self.authkey = secrets.token_bytes(16)

    def host(self, name: str, work: Work) -> Host:
        setup = Setup(
            name=name,
            root=os.path.join(self.base, "works", name),
            store_url=self.store_url,
            state_file=os.path.join(self.base, "state", f"{name}.db"),
            sockets=self.sockets,
            authkey=self.authkey,
        )
        os.makedirs(setup.root, exist_ok=True)
        return LocalHost(setup, work)

    def close(self) -> None:
        shutil.rmtree(self.sockets, ignore_errors=True)


class _Gone(Exception):
    """The work process exited."""


class LocalHost(Host):
    """The app's end of one work process."""

    def __init__(self, setup: Setup, work: Work) -> None:
        self.setup, self.work = setup, work
        self.process: Any = None
        self.conn: Connection | None = None
        self._outcome: Outcome | None = None  # a call's end, read while asking for state
        #: A Ctrl-C interrupted a read or write on the pipe: a message may be half sent or
        #: half read, so what follows on it is not to be trusted.
        self.torn = False

    def start(self) -> None:
        payload = pickled(self.work)
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        process = ctx.Process(
            target=child_main, args=(self.setup, payload, child), name=self.setup.name, daemon=True
        )
        try:
            with _interrupt_after():
                process.start()
                self.process = process  # only once started: stop() may join only a started one
        except Exception as exc:
            raise StartFailed(f"its process did not start: {type(exc).__name__}: {exc}") from None
        finally:
            child.close()
        try:
            first = self._receive(None)
        except _Gone:
            raise StartFailed(self._exited()) from None
        if first is not None and first[0] == "failed":
            self.process.join(5)
            raise StartFailed(f"it failed to start in its process:\n{first[1]}")

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert self.conn is not None
        self._outcome = None
        try:
            self.conn.send(("run", args, kwargs))
        except OSError:
            self._outcome = Outcome(self._exited(), None)

    def result(self, timeout: float | None) -> Outcome | None:
        if self._outcome is not None:
            outcome, self._outcome = self._outcome, None
            return outcome
        try:
            while True:
                message = self._receive(timeout)
                if message is None:
                    return None
                if message[0] == "done":
                    done: Outcome = message[1]
                    return done
        except _Gone:
            return Outcome(self._exited(), None)

    def state(self) -> dict[str, Any] | None:
        if not self.alive():
            return None
        assert self.conn is not None
        try:
            self.conn.send(("state",))
            while True:
                message = self._receive(request_timeout())
                if message is None:
                    return None
                if message[0] == "state":
                    state: dict[str, Any] = message[1]
                    return state
                if message[0] == "done":
                    self._outcome = message[1]  # the call ended meanwhile
        except (_Gone, OSError):
            return None

    def stop(self, timeout: float) -> dict[str, Any] | None:
        if self.process is None:
            return None
        final: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        if self.process.is_alive():
            try:
                final = self._ask_to_stop(deadline)
            except Exception:
                # The pipe cannot be trusted (a Ctrl-C cut a message in half, or the process
                # is dying): SIGTERM is a stop too, the process persists on it and exits.
                with contextlib.suppress(OSError):
                    self.process.terminate()
        self.process.join(max(deadline - time.monotonic(), 0) + 5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        return final

    def _ask_to_stop(self, deadline: float) -> dict[str, Any] | None:
        """Send a stop, wait for its ``stopped`` reply until ``deadline`` (None: no reply)."""
        assert self.conn is not None
        if self.torn:
            raise _Gone()
        self.conn.send(("stop",))
        while (left := deadline - time.monotonic()) > 0:
            message = self._receive(left)
            if message is None:
                raise _Gone()  # no answer in time: end it by signal
            if message[0] == "stopped":
                final: dict[str, Any] = message[1]
                return final
            if message[0] == "done":
                self._outcome = message[1]
        raise _Gone()

    def alive(self) -> bool:
        return self.process is not None and bool(self.process.is_alive())

    def _receive(self, timeout: float | None) -> Any:
        """The next message from the process; ``None`` past ``timeout``; ``_Gone`` if it exited."""
        assert self.conn is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = POLL_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                if self.conn.poll(min(wait, POLL_SECONDS)):
                    try:
                        return self.conn.recv()
                    except (EOFError, OSError):
                        self.process.join(POLL_SECONDS)  # its end closed: it is exiting
            except BaseException:
                self.torn = True
                raise
            if not self.process.is_alive():
                raise _Gone()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _exited(self) -> str:
        return f"its process exited unexpectedly (exit code {self.process.exitcode})"


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """A Ctrl-C during the block is raised when it ends, not in the middle of it.

    ``Process.start`` writes the child's start-up data down a pipe; cut short by
    KeyboardInterrupt, the child reads half of it and dies printing a traceback
    (``EOFError: Ran out of input``) on the user's terminal. Once started, the
    work is stopped like any other when the interrupt is raised.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[FrameType | None] = []
    previous = signal.signal(signal.SIGINT, lambda _, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, caught[0])


def child_main(setup: Setup, payload: bytes, conn: Connection) -> None:
    """Entry point of a work process (``multiprocessing`` spawn target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the app, which stops us
    try:
        work = pickle.loads(payload)
        origins = LiveOrigins(setup.sockets, setup.authkey)
        runtime = WorkRuntime(
            setup.name, work, setup.root, setup.store_url, setup.state_file, origins
        )
        server = Server(socket_path(setup.sockets, setup.name), setup.authkey, runtime.answer)
    except BaseException:
        conn.send(("failed", traceback.format_exc()))
        return
    loop = _Loop(runtime, conn)
    signal.signal(signal.SIGTERM, loop.on_sigterm)
    conn.send(("ready",))
    try:
        loop.serve()
    finally:
        try:
            runtime.close()  # persists: also when the app went away without a stop
        finally:
            server.close()
    with contextlib.suppress(OSError):
        loop.send(("stopped", runtime.state()))
    sys.exit(loop.exit_code)


_STOP = ("stop",)


class _Loop:
    """Runs calls on the main thread; a reader thread answers state and stop requests."""

    def __init__(self, runtime: WorkRuntime, conn: Connection) -> None:
        self.runtime, self.conn = runtime, conn
        self.commands: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.send_lock = threading.Lock()
        self.stopping = False
        self.exit_code = 0
        threading.Thread(target=self._read, daemon=True, name="cas-control").start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def serve(self) -> None:
        while True:
            message = self.commands.get()
            if message == _STOP:
                return
            _, args, kwargs = message
            outcome = self.runtime.run(args, kwargs)
            with contextlib.suppress(OSError):
                self.send(("done", outcome))

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = _STOP  # the app is gone
            if message[0] == "state":
                with contextlib.suppress(OSError):
                    self.send(("state", self.runtime.state()))
            elif message == _STOP:
                self._stop()
                return
            else:
                self.commands.put(message)

    def _stop(self) -> None:
        self.stopping = True
        self.runtime.stop_requested = True
        self.commands.put(_STOP)
        if self.runtime.in_user_code:
            main = threading.main_thread().ident
            assert main is not None
            signal.pthread_kill(main, signal.SIGTERM)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Stop: interrupt the user's ``run`` if it executes; persist; exit."""
        if not self.stopping:  # from outside, not from a stop request
            self.exit_code = 128 + signum
            self.stopping = True
            self.runtime.stop_requested = True
            # Not commands.put here: the main thread may hold the queue's lock.
            threading.Thread(target=self.commands.put, args=(_STOP,), daemon=True).start()
        if self.runtime.in_user_code and not self.runtime.interrupted:
            self.runtime.interrupted = True
            raise Interrupted(f"work {self.runtime.name} was stopped while running")
