"""The flow's handle on one work: blocking and background calls, state sync, stop.

Knows no executor: it drives a :class:`runtime.executor.Host`.
"""

from __future__ import annotations

from typing import Any

from .executor import Host, Outcome, StartFailed
from .state import public_state
from .work import Work, WorkFailed


class Runner:
    """Starts the work's host on first use; keeps the flow's view of the work current."""

    def __init__(self, work: Work, name: str, host: Host) -> None:
        self.work, self.name, self.host = work, name, host
        self.started = False
        #: ``start`` was called: a host may exist even if a Ctrl-C cut the start short.
        self.launched = False
        self.stopped = False
        self.busy = False  # a call is in flight
        #: A background call's failure that no ``wait()`` has raised yet.
        self.unreported: WorkFailed | None = None

    # -- calls ----------------------------------------------------------------
    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run once and wait; ``WorkFailed`` if it raised."""
        self._ready_for_a_call()
        self.busy = True
        self._collect(self.host.call(args, kwargs))
        self._report()

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Start a call in the background and return at once."""
        self._ready_for_a_call()
        self.host.begin(args, kwargs)
        self.busy = True

    def running(self) -> bool:
        """Whether a call runs; refreshes the flow's view of the work's attributes."""
        if not self.busy:
            return False
        outcome = self.host.result(0)
        if outcome is None:
            state = self.host.state()
            if state is not None:
                self._sync(state)
                return True
            outcome = self.host.result(0)  # no state: the host may have just died
            if outcome is None:
                return True
        self._collect(outcome)
        return False

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running call ends; ``TimeoutError``; ``WorkFailed`` if it failed."""
        if self.busy:
            outcome = self.host.result(timeout)
            if outcome is None:
                raise TimeoutError(f"work {self.name} is still running after {timeout:g} s")
            self._collect(outcome)
        self._report()

    def stop(self, timeout: float) -> None:
        """Interrupt a running call, persist, end the host. A stopped work runs no more."""
        if self.launched and not self.stopped:
            self.stopped = True
            state = self.host.stop(timeout)
            if state is not None:
                self._sync(state)
            self.busy = False  # a call it interrupted was stopped on purpose: no failure
        self.stopped = True

    # -- helpers ----------------------------------------------------------------
    def _ready_for_a_call(self) -> None:
        if self.busy and self.running():
            raise RuntimeError(
                f"work {self.name} is still running its previous run(); "
                "check work.running or call work.wait() before running it again"
            )
        self._report()
        if self.stopped:
            raise WorkFailed(self.name, "it was stopped; a stopped work cannot run again")
        if not self.started:
            self.launched = True  # before start: an interrupted start still gets stopped
            try:
                self.host.start()
            except StartFailed as failed:
                raise WorkFailed(self.name, f"it could not start: {failed}") from None
            self.started = True
        elif not self.host.alive():
            raise WorkFailed(self.name, "its process is no longer running")

    def _collect(self, outcome: Outcome) -> None:
        self.busy = False
        if outcome.state is not None:
            self._sync(outcome.state)
        if outcome.failure is not None:
            self.unreported = WorkFailed(self.name, outcome.failure)

    def _report(self) -> None:
        failure, self.unreported = self.unreported, None
        if failure is not None:
            raise failure

    def _sync(self, state: dict[str, Any]) -> None:
        # The flow's view of the work: replace its public attributes with the host's.
        for key in [k for k in public_state(self.work) if k not in state]:
            delattr(self.work, key)
        for key, value in state.items():
            object.__setattr__(self.work, key, value)
