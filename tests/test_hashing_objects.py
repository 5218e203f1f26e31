import io
import os

import fsspec
import pytest

from cas_storage.errors import CorruptObject, MissingObject
from cas_storage.hashing import digest_bytes, digest_file, digest_stream
from cas_storage.objects import LocalObjects, ObjectStore


def test_digests_agree_across_bytes_stream_and_file(tmp_path):
    data = os.urandom(9 * 1024 * 1024 + 17)  # spans several read blocks
    (tmp_path / "f").write_bytes(data)
    assert digest_stream(io.BytesIO(data)) == (digest_bytes(data), len(data))
    assert digest_file(tmp_path / "f") == digest_bytes(data)
    assert len(digest_bytes(data)) == 32 and digest_bytes(data) != digest_bytes(data[:-1])


@pytest.fixture(params=["local", "memory"])
def objects(request, tmp_path):
    if request.param == "local":
        yield LocalObjects(str(tmp_path / "store"))
        return
    fs = fsspec.filesystem("memory")
    root = f"/objects-test-{os.getpid()}-{id(tmp_path)}"
    yield ObjectStore(fs, root)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_put_read_has_iter_delete(objects):
    a = objects.put(b"alpha")
    b = objects.put(b"beta")
    assert a == digest_bytes(b"alpha")
    assert objects.put(b"alpha") == a  # idempotent
    assert objects.has(a) and objects.read(a) == b"alpha"
    assert objects.size(b) == 4
    assert sorted(objects) == sorted([a, b])
    objects.delete(a)
    assert not objects.has(a)
    with pytest.raises(MissingObject, match=a):
        objects.read(a)
    with pytest.raises(FileNotFoundError):  # MissingObject is a FileNotFoundError
        objects.read(a)


def test_fanout_layout(tmp_path):
    objects = LocalObjects(str(tmp_path))
    digest = objects.put(b"x")
    assert (tmp_path / "objects" / digest[:2] / digest[2:]).read_bytes() == b"x"
    assert list(objects.temp_files()) == []


def test_existing_object_is_never_rewritten(tmp_path):
    objects = LocalObjects(str(tmp_path))
    digest = objects.put(b"payload")
    path = objects.path(digest)
    before = os.stat(path)
    objects.put(b"payload")
    assert os.stat(path).st_ino == before.st_ino  # same file, not a rewrite
    assert os.stat(path).st_mtime_ns >= before.st_mtime_ns  # touched: gc's grace restarts


def test_corruption_is_detected_and_named(objects):
    digest = objects.put(b"precious bytes")
    if isinstance(objects, LocalObjects):
        _flip(objects.path(digest))
    else:
        objects.fs.pipe_file(objects.path(digest), b"precious bytez")
    with pytest.raises(CorruptObject) as caught:
        objects.read(digest)
    assert caught.value.digest == digest and digest in str(caught.value)
    assert objects.read(digest, verify=False) != b"precious bytes"


def _flip(path):
    os.chmod(path, 0o644)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_bad_digest_is_rejected(objects):
    with pytest.raises(ValueError, match="not an object digest"):
        objects.read("../../etc/passwd")
