"""Requests between work processes over Unix sockets, every one with a timeout.

Each running work listens at ``<sockets>/<work name>.sock`` on a thread of its
own, so it answers while its ``run`` executes and after it returns. A work that
is not running has no socket (or a dead one): asking it raises
``OriginUnavailable`` and the caller falls back to persisted versions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
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
        return self._ask(origin, "snapshot", path)

    def exists(self, origin: str, path: str) -> bool:
        return self._ask(origin, "exists", path)

    def _ask(self, origin: str, op: str, path: str) -> Any:
        address = socket_path(self.folder, origin)
        try:
            conn = Client(address, family="AF_UNIX", authkey=self.authkey)
        except (FileNotFoundError, ConnectionRefusedError):
            raise OriginUnavailable(origin) from None
        with conn:
            try:
                conn.send((op, path))
                if not conn.poll(self.timeout):
                    raise OriginError(
                        f"{origin} did not answer {op} of {path!r} within {self.timeout:g} s"
                    )
                reply = conn.recv()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                raise OriginError(f"{origin} stopped while answering {op} of {path!r}") from None
        if reply[0] == "error":
            raise OriginError(f"{origin} failed to {op} {path!r}: {reply[1]}")
        return reply[1]
