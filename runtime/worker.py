"""A work inside its host: context, inputs, the user's ``run``, persistence, requests.

Every executor runs this same code in the work's process or actor (see
:mod:`runtime.executor`); only how calls and requests reach it differs.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import threading
import traceback
from typing import Any

from cas_storage import Store, context
from cas_storage.context import Origins, WorkContext
from cas_storage.snapshot import QUIET_SECONDS

from .executor import Outcome
from .state import find_paths, owned_paths, public_state


class Interrupted(BaseException):
    """Raised inside the user's ``run`` when the host is told to stop mid-call.

    A ``BaseException``, so a user's ``except Exception`` does not swallow it.
    """


class WorkRuntime:
    """One work, installed in the current process: its root is the current directory."""

    def __init__(
        self,
        name: str,
        work: Any,
        root: str,
        store_url: str,
        state_file: str,
        origins: Origins | None,
    ) -> None:
        self.name, self.work, self.root = name, work, pathlib.Path(root)
        os.makedirs(root, exist_ok=True)
        os.chdir(root)
        self.store = Store.open(store_url, state=state_file)
        context.install(WorkContext(name, self.root, self.store, origins))
        #: True while the user's ``run`` executes: only then may a stop interrupt it.
        self.in_user_code = False
        #: Set when the host is told to stop; a call not yet in user code then never enters it.
        self.stop_requested = False
        #: Whether ``Interrupted`` was raised for this stop already (raise it only once).
        self.interrupted = False
        self._state_lock = threading.Lock()

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
        """Fetch inputs, run the user's ``run``, persist; report how it went."""
        failure: str | None = None
        try:
            self.fetch_inputs(args, kwargs)
            self.in_user_code = True
            try:
                if self.stop_requested:
                    raise Interrupted(f"work {self.name} was stopped before its run began")
                type(self.work)._user_run(self.work, *args, **kwargs)
            finally:
                self.in_user_code = False
        except BaseException:
            failure = traceback.format_exc()
        try:
            self.persist()
        except Exception:
            failure = (failure or "") + traceback.format_exc()
        return Outcome(failure, self.state())

    def fetch_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Paths from other works arrive before ``run`` starts, overwriting local files:
        those in the arguments and those held as the work's own attributes."""
        received = []
        seen: set[tuple[str, str]] = set()
        for path in find_paths([args, kwargs, public_state(self.work)]):
            origin = path.origin_name
            if not origin or origin == self.name or (origin, str(path)) in seen:
                continue
            seen.add((origin, str(path)))
            try:
                received.append((path, path.get(overwrite=True)))
            except FileNotFoundError:
                continue  # the origin has no such path (yet): passed through as it is
        object.__setattr__(self.work, "_received", received)

    def state(self) -> dict[str, Any]:
        """The work's public attributes now; safe to call while ``run`` executes."""
        with self._state_lock:
            while True:
                try:
                    # A copy: the user's run goes on changing the originals.
                    copied: dict[str, Any] = pickle.loads(pickle.dumps(public_state(self.work)))
                    return copied
                except RuntimeError:  # the attributes changed while being read: again
                    continue

    def persist(self) -> None:
        """Snapshot every Path this work owns that exists here."""
        for path in owned_paths(self.state(), self.name):
            key = path.store_key()
            if os.path.lexists(self.root / key):
                self.store.snapshot(self.name, key, self.root / key)

    def answer(self, op: str, key: str) -> Any:
        """A live request from another work for one of this work's paths."""
        local = self.root / key
        if op == "exists":
            return os.path.lexists(local)
        if op == "snapshot":
            if not os.path.lexists(local):
                return None
            # While the user's run executes it may be writing these files: read each only
            # once it has been quiet a moment, so no half-written file is recorded.
            quiet = QUIET_SECONDS if self.in_user_code else 0.0
            return self.store.snapshot(self.name, key, local, quiet=quiet)
        raise ValueError(f"unknown request {op!r}")

    def close(self) -> None:
        """Persist, then leave the process without a work context."""
        try:
            self.persist()
        finally:
            context.install(None)
