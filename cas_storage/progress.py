"""Progress of long operations (put, get, verify, gc, export-git): bytes, rate and ETA.

An operation calls ``start`` once it knows how much there is to do, then
``advance`` as it goes — bytes as they are read or written, not when a file
starts, so one big file moves the bar smoothly. ``Progress`` itself reports
nothing; ``TerminalProgress`` draws a rich progress bar on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only when a bar is actually drawn
    import rich.progress

#: Seconds between two redraws of the bar (rich refreshes on its own in between).
UPDATE_EVERY = 0.1


class Progress:
    """Hears how far an operation has got. This base class reports nothing."""

    def start(self, total_bytes: int | None = None, total_items: int | None = None) -> None:
        """The operation will handle ``total_bytes`` bytes (or ``total_items`` items)."""

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        """``files`` more files (or items) and ``nbytes`` more bytes are done."""

    def done(self) -> None:
        """The operation finished (or failed)."""


class TerminalProgress(Progress):
    """A rich progress bar on a terminal, shown only once an operation passes ``delay`` s.

    Nothing is drawn (and rich is not even imported) for quick operations or when
    ``stream`` is not a terminal, so scripts and pipes see no progress noise.

    >>> import io
    >>> bar = TerminalProgress("put", stream=io.StringIO())
    >>> bar.start(total_bytes=4096)
    >>> bar.advance(3, 4096); bar.done()   # quick, and not a terminal: prints nothing
    >>> bar.files, bar.bytes
    (3, 4096)
    """

    def __init__(
        self, verb: str, stream: TextIO | None = None, delay: float = 1.0, unit: str = "items"
    ) -> None:
        self.verb = verb
        self.unit = unit  # what ``total_items`` counts: objects, versions
        self.stream = stream or sys.stderr
        self.delay = delay
        self.started = time.monotonic()
        self.last = 0.0
        self.files = self.bytes = 0
        self.total_bytes: int | None = None
        self.total_items: int | None = None
        self.bar: rich.progress.Progress | None = None
        self.task: rich.progress.TaskID | None = None
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def start(self, total_bytes: int | None = None, total_items: int | None = None) -> None:
        self.total_bytes, self.total_items = total_bytes, total_items
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, total=self._total())

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.files += files
        self.bytes += nbytes
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last < UPDATE_EVERY or now - self.started < self.delay:
            return
        self.last = now
        self._draw()

    def done(self) -> None:
        if self.bar is None and self.tty and time.monotonic() - self.started >= self.delay:
            self._draw()
        if self.bar is not None:
            self._draw()
            self.bar.stop()
            self.bar = None

    # -- drawing -----------------------------------------------------------------
    def _by_bytes(self) -> bool:
        return self.total_bytes is not None or self.total_items is None

    def _total(self) -> float | None:
        total = self.total_bytes if self._by_bytes() else self.total_items
        return float(total) if total is not None else None

    def _draw(self) -> None:
        if self.bar is None:
            self._open()
        assert self.bar is not None and self.task is not None
        done = self.bytes if self._by_bytes() else self.files
        self.bar.update(self.task, completed=done, files=self.files)

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        counts: list[ProgressColumn] = (
            [
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("{task.fields[files]:,} files"),
            ]
            if self._by_bytes()
            else [MofNCompleteColumn(), TextColumn(self.unit)]
        )
        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            *counts,
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
        )
        self.bar.start()
        self.task = self.bar.add_task(self.verb, total=self._total(), files=self.files)
