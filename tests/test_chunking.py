"""Content-defined chunking: storage and transfer cost about what changed."""

import io
import os
import random

import pytest
from conftest import read_tree
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cas_storage import chunking
from cas_storage.errors import CorruptObject

MiB = 1024 * 1024


def stored_bytes(store) -> int:
    return sum(store.objects.size(d) for d in store.objects)


def chunks_of(store, work="w", path="ckpt"):
    manifest = store.manifest(store.version(work, path))
    return [c for e in manifest.files for c in e.chunks]


@pytest.fixture(scope="module")
def payload():
    return os.urandom(64 * MiB)


def test_a_rewritten_middle_costs_about_what_changed(store, tmp_path, payload):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(payload)
    store.snapshot("w", "ckpt", src)
    assert len(chunks_of(store)) > 16  # large files are chunked
    store.checkout("w", "ckpt", tmp_path / "serve")

    changed = bytearray(payload)
    changed[32 * MiB : 33 * MiB] = os.urandom(MiB)
    (src / "model.bin").write_bytes(bytes(changed))
    before = stored_bytes(store)
    store.snapshot("w", "ckpt", src)
    assert stored_bytes(store) - before < 4 * MiB

    r = store.checkout("w", "ckpt", tmp_path / "serve", overwrite=True)
    assert r.files_transferred == 1 and 0 < r.bytes_transferred < 4 * MiB
    assert (tmp_path / "serve" / "model.bin").read_bytes() == bytes(changed)


def test_bytes_inserted_at_the_start_reuse_almost_every_chunk(store, tmp_path, payload):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(payload)
    store.snapshot("w", "ckpt", src)
    old = {d for d, _ in chunks_of(store)}
    (src / "model.bin").write_bytes(b"13 new bytes!" + payload)
    store.snapshot("w", "ckpt", src)
    new = [d for d, _ in chunks_of(store)]
    reused = sum(1 for d in new if d in old) / len(new)
    assert reused >= 0.95, f"only {reused:.0%} of chunks reused"


def test_identical_resave_stores_and_moves_nothing(store, tmp_path, payload):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(payload)
    v1 = store.snapshot("w", "ckpt", src)
    store.checkout("w", "ckpt", tmp_path / "serve")
    objects_before = set(store.objects)
    (src / "model.bin").write_bytes(payload)  # re-saved: new mtime, same bytes
    assert store.snapshot("w", "ckpt", src) == v1
    assert set(store.objects) == objects_before
    r = store.checkout("w", "ckpt", tmp_path / "serve", overwrite=True)
    assert (r.files_transferred, r.bytes_transferred) == (0, 0)


def test_chunked_round_trip_and_a_corrupt_chunk(store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    size = 3 * chunking.THRESHOLD + 12345
    (src / "a.bin").write_bytes(os.urandom(size))
    (src / "small.txt").write_text("small")
    store.snapshot("w", "ckpt", src)
    store.checkout("w", "ckpt", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)

    digest = chunks_of(store)[1][0]
    # A loose file or a place in a pack, depending on how many chunks the random
    # content cut into (a batch of 16 objects or more is packed).
    victim, offset, _ = store.objects.locate(digest)
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(offset + 100)
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptObject, match=digest):
        store.checkout("w", "ckpt", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=12 * 2**20),
    window=st.integers(min_value=0, max_value=6 * 2**20),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_windowed_cuts_are_fastcdcs_over_the_whole_stream(size, window, seed):
    """Cut window by window, the chunks are exactly those of pyfastcdc's own stream
    reader, whatever the window (stores written before keep deduplicating)."""
    from pyfastcdc.cy import FastCDC

    data = random.Random(seed).randbytes(size)
    reference = FastCDC(chunking.AVG_SIZE, min_size=chunking.MIN_SIZE, max_size=chunking.MAX_SIZE)
    expected = [bytes(c.data) for c in reference.cut_stream(io.BytesIO(data))]
    assert [bytes(c) for c in chunking.chunks(io.BytesIO(data), window)] == expected


def test_one_chunker_cuts_stream_after_stream_as_a_fresh_one_would():
    """The window buffers are reused from file to file: nothing of one file leaks
    into the cuts of the next, longer or shorter."""
    chunker = chunking.Chunker(window=4 * MiB)
    for seed, size in [(1, 9 * MiB + 7), (2, 3 * MiB), (3, 11 * MiB), (4, 0), (5, 5 * MiB)]:
        data = random.Random(seed).randbytes(size)
        expected = [bytes(c) for c in chunking.chunks(io.BytesIO(data), 4 * MiB)]
        assert [bytes(c) for c in chunker.chunks(io.BytesIO(data))] == expected
        assert b"".join(expected) == data


class _FailingStream(io.BytesIO):
    def __init__(self, data: bytes, fail_after: int) -> None:
        super().__init__(data)
        self.fail_after = fail_after

    def readinto(self, buffer):
        if self.tell() >= self.fail_after:
            raise OSError(5, "Input/output error")
        return super().readinto(buffer[: self.fail_after - self.tell()])


def test_a_read_error_reaches_the_caller_and_stops_the_reading_thread():
    import threading

    data = random.Random(7).randbytes(40 * MiB)
    before = threading.active_count()
    with pytest.raises(OSError, match="Input/output error"):
        for _ in chunking.chunks(_FailingStream(data, 20 * MiB)):
            pass
    assert threading.active_count() == before


def test_leaving_early_stops_the_reading_thread_before_the_stream_is_closed():
    import contextlib
    import threading

    data = random.Random(8).randbytes(64 * MiB)
    before = threading.active_count()
    stream = io.BytesIO(data)
    with contextlib.closing(chunking.chunks(stream)) as pieces:
        first = next(pieces)
        assert len(first) > 0
    position = stream.tell()
    stream.close()  # the thread has stopped: nothing reads after this
    assert threading.active_count() == before
    assert position < len(data)  # it did not read the whole stream ahead


def _fastcdc_cuts(data: bytes) -> list[bytes]:
    """The cut of ``data`` in one pass, as pyfastcdc's own stream reader makes it."""
    from pyfastcdc.cy import FastCDC

    reference = FastCDC(chunking.AVG_SIZE, min_size=chunking.MIN_SIZE, max_size=chunking.MAX_SIZE)
    return [bytes(c.data) for c in reference.cut_stream(io.BytesIO(data))]


@settings(max_examples=10, deadline=None)
@given(
    head=st.integers(min_value=0, max_value=2 * MiB),
    period=st.integers(min_value=1000, max_value=3 * MiB),
    size=st.integers(min_value=5 * MiB, max_value=16 * MiB),
    seed=st.integers(min_value=0, max_value=2**32),
)
# Found by hypothesis: content repeating every 300,000 bytes keeps three windows out
# of step with the true cuts, so the caller cuts them itself to their end.
@example(head=606488, period=300000, size=14 * MiB, seed=1)
def test_cuts_of_repeating_content_are_fastcdcs_too(head, period, size, seed):
    """Repeating content (a checkpoint of identical tensors) can keep a window's cuts
    from ever meeting the true ones: those are still exactly the one-pass cuts."""
    rng = random.Random(seed)
    unit = rng.randbytes(period)
    data = (rng.randbytes(head) + unit * (size // period + 1))[:size]
    assert [bytes(c) for c in chunking.chunks(io.BytesIO(data), 4 * MiB)] == _fastcdc_cuts(data)


def test_a_file_is_cut_by_positional_reads_from_where_its_stream_stands(tmp_path):
    """A real file is read with ``pread`` by several threads: the cut starts where
    the stream stands and leaves it after the last byte."""
    data = random.Random(9).randbytes(23 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        stream.seek(1000)
        cut = [bytes(c) for c in chunking.chunks(stream, 4 * MiB)]
        assert stream.tell() == len(data)
    assert cut == _fastcdc_cuts(data[1000:])


W, M = 4 * MiB, chunking.MAX_SIZE  # a window and the bytes a cut may need past it


@pytest.mark.parametrize(
    "size",
    [
        W + M - 1,  # fits one buffer: cut inline
        W + M,  # fills it exactly: window 1 holds only the last M bytes
        W + M + 1,
        2 * W,  # ends where window 2 starts
        2 * W + M + 1,
    ],
)
def test_streams_ending_at_a_window_edge_are_cut_in_one_pass(size):
    data = random.Random(size).randbytes(size)
    assert [bytes(c) for c in chunking.chunks(io.BytesIO(data), W)] == _fastcdc_cuts(data)
