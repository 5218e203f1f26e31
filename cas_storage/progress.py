"""Progress reporting for long snapshots and checkouts (files and bytes, with rate)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Receives one ``advance`` per file processed. This base class reports nothing."""

    def advance(self, files: int, nbytes: int) -> None:
        """``files`` more files and ``nbytes`` more bytes are done."""

    def done(self) -> None:
        """The operation finished (or failed)."""


class TerminalProgress(Progress):
    """A one-line counter on a terminal, shown only once an operation passes ``delay`` s.

    >>> import io
    >>> bar = TerminalProgress("put", stream=io.StringIO())
    >>> bar.advance(3, 4096); bar.done()   # quick, and not a terminal: prints nothing
    """

    def __init__(self, verb: str, stream: TextIO | None = None, delay: float = 1.0) -> None:
        self.verb = verb
        self.stream = stream or sys.stderr
        self.delay = delay
        self.start = time.monotonic()
        self.last = self.start - 1.0  # the first line may be drawn as soon as delay has passed
        self.files = self.bytes = 0
        self.shown = False

    def advance(self, files: int, nbytes: int) -> None:
        self.files += files
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.start >= self.delay and now - self.last >= 0.1 and self._tty():
            self.last = now
            self._draw(now)

    def done(self) -> None:
        now = time.monotonic()
        if self.shown or (now - self.start >= self.delay and self._tty()):
            self._draw(now)
            self.stream.write("\n")
            self.stream.flush()

    def _tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def _draw(self, now: float) -> None:
        rate = self.bytes / max(now - self.start, 1e-9) / 1e6
        self.stream.write(
            f"\r{self.verb}: {self.files:,} files, {self.bytes / 1e6:,.1f} MB, {rate:,.1f} MB/s"
        )
        self.stream.flush()
        self.shown = True
