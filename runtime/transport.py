"""Requests between work processes over Unix sockets, every one with a timeout.

Each running work listens at ``<sockets>/<work name>.sock`` on a thread of its
own, so it answers while its ``run`` executes and after it returns. A work that
is not running has no socket (or a dead one): asking it raises
``OriginUnavailable`` and the caller falls back to persisted versions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import (
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from typing import Any

from cas_storage.catalog import Version
from cas_storage.context import OriginUnavailable

DEFAULT_TIMEOUT = 60.0


def request_timeout() -> float:
    """Seconds a request may take: ``$CAS_RUNTIME_TIMEOUT`` or 60."""
    return float(os.environ.get("CAS_RUNTIME_TIMEOUT", DEFAULT_TIMEOUT))


class OriginError(RuntimeError):
    """A running origin failed to answer (it died, hung past the timeout, or raised)."""


def socket_path(folder: str, work: str) -> str:
    return os.path.join(folder, f"{work}.sock")


class Server:
    """Answers other works' requests for this work's files, on a daemon thread."""

    def __init__(self, address: str, authkey: bytes, handler: Callable[[str, str], Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)  # a socket left by a killed predecessor
        self.address = address
        self.listener = Listener(address, family="AF_UNIX", authkey=authkey)
        self.handler = handler
        threading.Thread(target=self._serve, daemon=True, name="cas-requests").start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Connection) -> None:
        with conn:
            try:
                op, path = conn.recv()
                conn.send(("ok", self.handler(op, path)))
            except EOFError:
                return
            except Exception as exc:  # the asker gets the error, this work keeps serving
                with contextlib.suppress(OSError):
                    conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))

    def close(self) -> None:
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)


class LiveOrigins:
    """``cas_storage.context.Origins`` for works of one app on this machine."""

    def __init__(self, folder: str, authkey: bytes, timeout: float | None = None) -> None:
        self.folder = folder
        self.authkey = authkey
        self.timeout = timeout if timeout is not None else request_timeout()

    def snapshot(self, origin: str, path: str) -> Version | None:
        answer: Version | None = self._ask(origin, "snapshot", path)
        return answer

    def exists(self, origin: str, path: str) -> bool:
        return bool(self._ask(origin, "exists", path))

    def _ask(self, origin: str, op: str, path: str) -> Any:
        """One request, bounded end to end (connect, handshake, reply) by the timeout."""
        deadline = time.monotonic() + self.timeout
        late = OriginError(f"{origin} did not answer {op} of {path!r} within {self.timeout:g} s")
        conn = self._connect(origin, deadline, late)
        with conn:
            try:
                _bounded(conn, deadline, late, lambda: _handshake(conn, self.authkey))
                conn.send((op, path))
                if not conn.poll(max(deadline - time.monotonic(), 0)):
                    raise late
                reply = conn.recv()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                raise OriginError(f"{origin} stopped while answering {op} of {path!r}") from None
            except AuthenticationError as exc:
                raise OriginError(f"{origin} refused {op} of {path!r}: {exc}") from None
        if reply[0] == "error":
            raise OriginError(f"{origin} failed to {op} {path!r}: {reply[1]}")
        return reply[1]

    def _connect(self, origin: str, deadline: float, late: OriginError) -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sock.connect(socket_path(self.folder, origin))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise OriginUnavailable(origin) from None
        except TimeoutError:  # socket.timeout: the backlog of a stuck origin is full
            sock.close()
            raise late from None
        except BaseException:
            sock.close()
            raise
        sock.setblocking(True)
        return Connection(sock.detach())


def _handshake(conn: Connection, authkey: bytes) -> None:
    """The client side of multiprocessing's authentication (as ``Client`` does it)."""
    answer_challenge(conn, authkey)
    deliver_challenge(conn, authkey)


def _bounded(
    conn: Connection, deadline: float, late: OriginError, step: Callable[[], None]
) -> None:
    """Run a blocking ``step`` on ``conn``, giving up at ``deadline``.

    The step runs on a helper thread; past the deadline the connection is shut
    down, which ends the helper's blocked read, and ``late`` is raised.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the asking thread
            failure.append(exc)

    helper = threading.Thread(target=run, daemon=True, name="cas-handshake")
    helper.start()
    helper.join(max(deadline - time.monotonic(), 0))
    if helper.is_alive():
        with contextlib.suppress(OSError):
            socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)
        helper.join(1)
        raise late
    if failure:
        raise failure[0]
