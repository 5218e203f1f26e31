"""Leases on the store: snapshots share it, gc's delete phase holds it alone.

The locks are records *in the store* (``locks/shared-<id>.json``,
``locks/exclusive-<id>.json``), created create-only (a local file via
``link(2)``, an S3 object via ``If-None-Match: *``), so every process on every
machine that uses the store sees them. The protocol (restic's, for ``backup``
and ``prune``):

* **create, then check.** A holder first creates its own lock, then lists the
  others. Of a snapshot and a gc that start at once, at least one sees the
  other's lock, so they never both proceed.
* **shared** (a snapshot, a checkout): proceeds when no exclusive lock is
  listed; otherwise it removes its own lock, waits until the exclusive ones are
  gone, and starts over. So an exclusive lock that is merely *waiting* already
  holds new shared holders back: gc is not starved by a stream of snapshots.
* **exclusive** (gc's delete phase): proceeds when no shared lock is listed;
  it keeps its lock while it waits for the shared ones to finish. Two
  exclusive holders may run together: each deletes only what the catalog does
  not reference, and no snapshot runs meanwhile.
* **stale locks** of dead holders are removed: same host and the process is
  gone; or not refreshed for ``STALE_SECONDS``, measured on the store's clock
  (the time of the lock just created, never this machine's clock). A live
  holder refreshes its lock every ``REFRESH_SECONDS``.
* **bounded waits**: ``TimeoutError`` naming the lock, its holder and purpose.

>>> import tempfile
>>> from cas_storage.objects import LocalObjects
>>> locks = Locks(LocalObjects(tempfile.mkdtemp()))
>>> with locks.shared("a snapshot"):
...     locks.held()
'shared'

"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import CasError
from .objects import ObjectStore

FOLDER = "locks"
SHARED, EXCLUSIVE = "shared", "exclusive"
#: A live holder renews its lock this often ...
REFRESH_SECONDS = 60.0
#: ... so one not renewed for this long belongs to a holder that is gone.
STALE_SECONDS = 600.0


def wait_seconds() -> float:
    """How long to wait for a lock: ``$CAS_LOCK_WAIT`` seconds, default 600."""
    return float(os.environ.get("CAS_LOCK_WAIT", "600"))


@dataclass(frozen=True)
class Holder:
    """What a lock record says about who holds it."""

    name: str
    kind: str
    host: str
    pid: int
    purpose: str
    written: float  # store clock

    def describe(self) -> str:
        return f"{self.purpose} (pid {self.pid} on {self.host}, lock {self.name})"


class LeaseLost(CasError):
    """Our lock was removed as stale while we held it (we stalled past ``STALE_SECONDS``)."""


@dataclass(frozen=True)
class Lease:
    """A held lock; ``check()`` before committing what was done under it."""

    objects: ObjectStore
    name: str  # "" when the store cannot be written (nothing to protect there)

    def check(self) -> None:
        """Raise ``LeaseLost`` if our lock was removed as stale meanwhile."""
        if self.name and self.name not in self.objects.records(FOLDER):
            raise LeaseLost(
                f"the store lease {self.name} was removed as stale while this process held "
                f"it (it stalled for over {STALE_SECONDS:g} s); nothing was recorded, try again"
            )


class Locks:
    """Shared and exclusive leases on one store, through lock records in it."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.host = socket.gethostname()
        self._mine = threading.local()  # .lease: the lease this thread holds

    def shared(
        self, purpose: str, reading: bool = False
    ) -> contextlib.AbstractContextManager[Lease]:
        """Hold a shared lease (re-entrant in one thread).

        ``reading``: a reader (checkout) of a store it cannot write goes on without a
        lock — it cannot create one — rather than fail.
        """
        return self._hold(SHARED, purpose, reading)

    def exclusive(self, purpose: str) -> contextlib.AbstractContextManager[Lease]:
        """Hold the exclusive lease: no shared holder runs meanwhile."""
        return self._hold(EXCLUSIVE, purpose, False)

    def held(self) -> str:
        """The kind of lease this thread holds: ``"shared"``, ``"exclusive"`` or ``""``."""
        lease = getattr(self._mine, "lease", None)
        if lease is None:
            return ""
        return EXCLUSIVE if "/exclusive-" in lease.name else SHARED

    # -- the protocol -------------------------------------------------------------
    @contextlib.contextmanager
    def _hold(self, kind: str, purpose: str, reading: bool) -> Iterator[Lease]:
        outer = getattr(self._mine, "lease", None)
        if outer is not None:
            # Already held here: a nested lease is the outer one (waiting on our own
            # lock would deadlock). The exclusive lease covers shared work too.
            if kind == EXCLUSIVE and "/exclusive-" not in outer.name:
                raise RuntimeError("cannot take the exclusive store lock inside a shared one")
            yield outer
            return
        try:
            name = self._acquire(kind, purpose)
        except OSError as exc:
            if not (reading and _cannot_write(exc)):
                raise
            name = ""
        lease = Lease(self.objects, name)
        if not name:
            yield lease
            return
        stop = threading.Event()
        refresher = threading.Thread(
            target=self._refresh, args=(name, purpose, stop), daemon=True, name="cas-lock"
        )
        refresher.start()
        self._mine.lease = lease
        try:
            yield lease
        finally:
            self._mine.lease = None
            stop.set()
            refresher.join()
            self.objects.delete_record(name)

    def _acquire(self, kind: str, purpose: str) -> str:
        deadline = time.monotonic() + wait_seconds()
        delay = 0.002
        name = self._create(kind, purpose)
        while True:
            against = EXCLUSIVE if kind == SHARED else SHARED
            blockers = [h for h in self._live_others(name) if h.kind == against]
            if not blockers:
                return name
            if kind == SHARED:
                # Writer preference: step back while any exclusive lock exists.
                self.objects.delete_record(name)
                name = ""
            if time.monotonic() >= deadline:
                if name:
                    self.objects.delete_record(name)
                who = "; ".join(h.describe() for h in blockers)
                raise TimeoutError(
                    f"waited {wait_seconds():g} s for the store's {kind} lock at "
                    f"{self.objects.root}/{FOLDER}: held by {who} (set CAS_LOCK_WAIT to wait "
                    "longer; a lock of a dead holder goes stale after "
                    f"{STALE_SECONDS:g} s)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            if not name:
                name = self._create(kind, purpose)

    def _create(self, kind: str, purpose: str) -> str:
        name = f"{FOLDER}/{kind}-{uuid.uuid4().hex}.json"
        self.objects.create_record(name, self._body(kind, purpose))
        return name

    def _body(self, kind: str, purpose: str) -> bytes:
        return json.dumps(
            {"kind": kind, "host": self.host, "pid": os.getpid(), "purpose": purpose}
        ).encode()

    def _live_others(self, mine: str) -> list[Holder]:
        """The other holders, after removing the locks of dead ones."""
        records = self.objects.records(FOLDER)
        now = records.get(mine)  # our lock was written just now: the store's clock
        out = []
        for name, written in records.items():
            if name == mine or not name.endswith(".json") or "/clock-" in name:
                continue
            holder = self._read(name, written)
            if holder is None:
                continue
            if self._stale(holder, now):
                self.objects.delete_record(name)
                continue
            out.append(holder)
        return out

    def _read(self, name: str, written: float) -> Holder | None:
        try:
            raw = json.loads(self.objects.read_record(name))
            return Holder(
                name,
                str(raw["kind"]),
                str(raw["host"]),
                int(raw["pid"]),
                str(raw["purpose"]),
                written,
            )
        except FileNotFoundError:
            return None  # released meanwhile
        except (ValueError, KeyError, TypeError):
            # Unreadable: judge it by age alone, as an unknown holder's exclusive lock.
            kind = SHARED if "/shared-" in name else EXCLUSIVE
            return Holder(name, kind, "", 0, "an unknown holder", written)

    def _stale(self, holder: Holder, now: float | None) -> bool:
        if holder.host == self.host and holder.pid and not _alive(holder.pid):
            return True
        return now is not None and now - holder.written > STALE_SECONDS

    def _refresh(self, name: str, purpose: str, stop: threading.Event) -> None:
        kind = EXCLUSIVE if "/exclusive-" in name else SHARED
        while not stop.wait(REFRESH_SECONDS):
            with contextlib.suppress(OSError):
                if not self.objects.refresh_record(name, self._body(kind, purpose)):
                    return  # removed as stale: the holder learns it when it checks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _cannot_write(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES)
