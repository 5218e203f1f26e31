"""The work process: install the context, serve other works, run, persist, repeat."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from cas_storage import Store, context
from cas_storage.context import WorkContext

from .state import find_paths, owned_paths, public_state
from .transport import LiveOrigins, Server, socket_path


@dataclass(frozen=True)
class Setup:
    """Everything a work process needs, sent once when it starts."""

    name: str
    root: str
    store_url: str
    state_file: str
    sockets: str
    authkey: bytes


def main(setup: Setup, work: Any, conn: Connection) -> None:
    """Entry point of a work process (``multiprocessing`` spawn target)."""
    os.makedirs(setup.root, exist_ok=True)
    os.chdir(setup.root)
    store = Store.open(setup.store_url, state=setup.state_file)
    ctx = WorkContext(
        setup.name, pathlib.Path(setup.root), store, LiveOrigins(setup.sockets, setup.authkey)
    )
    context.install(ctx)
    loop = _WorkLoop(setup, work, store, conn)
    signal.signal(signal.SIGTERM, loop.terminate)
    server = Server(socket_path(setup.sockets, setup.name), setup.authkey, loop.answer)
    try:
        loop.serve()
    finally:
        server.close()
        if not loop.stopped:
            loop.persist()  # the app went away without a stop: persist anyway


class _WorkLoop:
    def __init__(self, setup: Setup, work: Any, store: Store, conn: Connection) -> None:
        self.setup, self.work, self.store, self.conn = setup, work, store, conn
        self.stopped = False

    def serve(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return  # the app is gone
            if message[0] == "stop":
                self.persist()
                self.stopped = True
                self.conn.send(("stopped", public_state(self.work)))
                return
            _, args, kwargs = message
            self.conn.send(self.run(args, kwargs))

    def run(self, args: tuple, kwargs: dict) -> tuple:
        try:
            self.fetch_inputs(args, kwargs)
            type(self.work)._user_run(self.work, *args, **kwargs)
            outcome: tuple = ("ok",)
        except BaseException:
            outcome = ("error", traceback.format_exc())
        try:
            self.persist()
        except Exception:
            outcome = ("error", traceback.format_exc())
        return (*outcome, public_state(self.work))

    def fetch_inputs(self, args: tuple, kwargs: dict) -> None:
        """Path arguments whose origin has them arrive before ``run`` starts."""
        received = []
        for path in find_paths([args, kwargs]):
            if path.origin_name and path.origin_name != self.setup.name and path.exists_remote():
                received.append((path, path.get(overwrite=True)))
        object.__setattr__(self.work, "_received", received)

    def persist(self) -> None:
        """Snapshot every Path this work owns that exists here."""
        root = pathlib.Path(self.setup.root)
        for path in owned_paths(public_state(self.work), self.setup.name):
            key = path.store_key()
            if os.path.lexists(root / key):
                self.store.snapshot(self.setup.name, key, root / key)

    def answer(self, op: str, key: str) -> Any:
        """A live request from another work for one of this work's paths."""
        local = pathlib.Path(self.setup.root) / key
        if op == "exists":
            return os.path.lexists(local)
        if op == "snapshot":
            if not os.path.lexists(local):
                return None
            return self.store.snapshot(self.setup.name, key, local)
        raise ValueError(f"unknown request {op!r}")

    def terminate(self, signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            self.persist()
        sys.exit(128 + signum)
