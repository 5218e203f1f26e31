"""BackgroundPuts: every queued object is stored before drain returns, failures reach the
caller, and nothing is still writing once the block is left."""

from __future__ import annotations

import errno
import threading

import pytest

from cas_storage.hashing import digest_bytes
from cas_storage.objects import LocalObjects
from cas_storage.pipeline import BackgroundPuts


def test_everything_queued_is_stored_once_when_the_block_ends(tmp_path):
    objects = LocalObjects(str(tmp_path))
    calls = []
    real_put = objects.put
    objects.put = lambda data, digest: calls.append(digest) or real_put(data, digest)
    blobs = [bytes([i]) * 1000 for i in range(100)]
    with BackgroundPuts(objects, workers=2, depth=4) as puts:
        for blob in blobs + blobs:  # each twice: written once
            puts.put(blob, digest_bytes(blob))
    assert sorted(calls) == sorted(digest_bytes(b) for b in blobs)
    assert all(objects.read(digest_bytes(b)) == b for b in blobs)


def test_a_failed_write_is_raised_in_the_callers_thread(tmp_path):
    objects = LocalObjects(str(tmp_path))

    def full(data, digest):
        raise OSError(errno.ENOSPC, "No space left on device while storing an object")

    objects.put = full
    with (
        pytest.raises(OSError, match="No space") as caught,
        BackgroundPuts(objects, workers=2) as puts,
    ):
        for i in range(50):
            puts.put(b"x%d" % i, digest_bytes(b"x%d" % i))
    assert caught.value.errno == errno.ENOSPC


def test_leaving_on_an_error_waits_for_writes_in_flight(tmp_path):
    objects = LocalObjects(str(tmp_path))
    release, finished = threading.Event(), []
    real_put = objects.put

    def slow(data, digest):
        release.wait(5)
        finished.append(digest)
        return real_put(data, digest)

    objects.put = slow
    with pytest.raises(RuntimeError), BackgroundPuts(objects, workers=2) as puts:
        puts.put(b"a", digest_bytes(b"a"))
        threading.Timer(0.05, release.set).start()
        raise RuntimeError("the walk failed")
    assert finished == [digest_bytes(b"a")]  # done before the block was left
