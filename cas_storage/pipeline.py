"""Object writes on worker threads, so reading, chunking and hashing never wait for them.

A snapshot is a pipeline: one thread reads, cuts and hashes (pyfastcdc, xxhash and
file reads release the GIL for large buffers), workers store the objects (temp file,
write, rename: system calls that release it too). A bounded number of writes is in
flight, so memory stays flat whatever the size of the tree; ``drain`` waits for all
of them and raises the first failure, so a caller that drains before recording a
manifest still stores every object before the manifest that needs it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from .objects import ObjectStore

#: Writer threads. Two overlap one write's system calls with another's on this
#: 2-core machine; more only queue on the same disk.
WORKERS = 2
#: Writes in flight at most (each holds one chunk, at most ``chunking.MAX_SIZE``).
DEPTH = 16


class BackgroundPuts:
    """``objects.put`` on worker threads; each digest is written at most once.

    >>> import fsspec
    >>> from cas_storage.hashing import digest_bytes
    >>> objects = ObjectStore(fsspec.filesystem("memory"), "/doc-pipeline")
    >>> with BackgroundPuts(objects) as puts:
    ...     puts.put(b"hello", digest_bytes(b"hello"))
    >>> objects.read(digest_bytes(b"hello"))
    b'hello'
    """

    def __init__(self, objects: ObjectStore, workers: int = WORKERS, depth: int = DEPTH) -> None:
        self.objects = objects
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cas-put")
        self._slots = threading.BoundedSemaphore(depth)
        self._sent: set[str] = set()
        self._pending: set[Future[str]] = set()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None

    def put(self, data: bytes, digest: str) -> None:
        """Queue ``data`` (an immutable copy: it is written later) to be stored as ``digest``.

        Blocks while ``DEPTH`` writes are in flight; raises the failure of an earlier one.
        """
        self._raise_failure()
        if digest in self._sent:
            return
        self._sent.add(digest)
        self._slots.acquire()
        future = self._pool.submit(self.objects.put, data, digest)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[str]) -> None:
        with self._lock:
            self._pending.discard(future)
            if future.exception() is not None and self._failure is None:
                self._failure = future.exception()
        self._slots.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def drain(self) -> None:
        """Wait for every queued write; raise the first that failed."""
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                break
            for future in pending:
                future.exception()  # waits; failures are recorded by _finished
        self._raise_failure()

    def close(self) -> None:
        """Wait for what is in flight (nothing keeps writing after we return) and stop."""
        self._pool.shutdown(wait=True)

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
