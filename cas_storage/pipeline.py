"""Object writes, inline or on worker threads, each digest once.

A snapshot stores its objects inline by default: appending to a pack file (or a
remote pack in memory, which uploads on its own threads) measured faster on the
caller's thread than handed to a writer thread — 512 MiB in 2 files: 0.85 s inline,
0.95 s with one writer; 20,000 x 4 KiB: 0.84 s against 1.2-1.75 s — the hand-off
costing more than the write system call. ``workers`` threads remain for stores whose
puts block long. A bounded number of writes is in flight, so memory stays flat
whatever the size of the tree; ``drain`` waits for all of them and raises the first
failure, so a caller that drains before recording a manifest still stores every
object before the manifest that needs it.
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType

from .objects import ObjectStore

#: Writes queued at most (each holds one chunk, at most ``chunking.MAX_SIZE``).
DEPTH = 16


class BackgroundPuts:
    """``objects.put``, inline or on ``workers`` threads; each digest is written at most once.

    Plain threads and a bounded queue, not ``concurrent.futures``: that imports
    ``logging``, a noticeable share of every command's start-up.

    >>> import fsspec
    >>> from cas_storage.hashing import digest_bytes
    >>> objects = ObjectStore(fsspec.filesystem("memory"), "/doc-pipeline")
    >>> with BackgroundPuts(objects) as puts:
    ...     puts.put(b"hello", digest_bytes(b"hello"))
    >>> objects.read(digest_bytes(b"hello"))
    b'hello'
    """

    def __init__(self, objects: ObjectStore, workers: int = 0, depth: int = DEPTH) -> None:
        self.objects = objects
        self._queue: queue.Queue[tuple[bytes | memoryview, str] | None] = queue.Queue(depth)
        self._sent: set[str] = set()
        self._failure: BaseException | None = None
        self._workers = [
            threading.Thread(target=self._work, name=f"cas-put-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def inline(self) -> bool:
        """Whether ``put`` stores before it returns (no worker threads): then ``data``
        may be a view its caller reuses afterwards."""
        return not self._workers

    def put(self, data: bytes | memoryview, digest: str) -> None:
        """Queue ``data`` (an immutable copy, unless ``inline``) to be stored as ``digest``.

        Blocks while ``DEPTH`` writes wait; raises the failure of an earlier one.
        """
        self._raise_failure()
        if digest in self._sent:
            return
        self._sent.add(digest)
        if self._workers:
            self._queue.put((data, digest))
        else:
            self.objects.put(data, digest)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._failure is None:  # after a failure, only drain the queue
                    self.objects.put(*item)
            except BaseException as exc:  # handed to the caller's thread by drain/put
                if self._failure is None:
                    self._failure = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def drain(self) -> None:
        """Wait for every queued write; raise the first that failed."""
        self._queue.join()
        self._raise_failure()

    def close(self) -> None:
        """Wait for what is queued (nothing keeps writing after we return) and stop."""
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()

    def __enter__(self) -> BackgroundPuts:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self.drain()
        finally:
            self.close()
