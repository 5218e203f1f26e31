"""Drive across real work processes that share one real store.

Each work is a spawned process with its own root, its own state file and its own
installed ``WorkContext`` over the same store folder — what the runtime sets up,
without the runtime. Drives are sent to the works pickled, as the runtime does.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import pathlib
import pickle
import shutil
import time

import pytest
from conftest import read_tree, write_tree

from cas_storage import Drive, Store, context
from cas_storage.context import WorkContext
from cas_storage.drive import drive_work

CALL_TIMEOUT = 60


# -- a work process ------------------------------------------------------------
def _serve(name: str, root: str, store_dir: str, state: str, conn) -> None:
    store = Store.open(store_dir, state=state)
    context.install(WorkContext(name, pathlib.Path(root), store))
    os.chdir(root)
    while True:
        message = conn.recv()
        if message is None:
            return
        fn, args, kwargs = message
        try:
            reply = ("ok", fn(*args, **kwargs))
            pickle.dumps(reply)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the test
            try:
                pickle.dumps(exc)
                reply = ("err", exc)
            except Exception:
                reply = ("err", RuntimeError(repr(exc)))
        conn.send(reply)


class WorkProcess:
    """One work: a spawned process that runs the functions it is sent, in its context."""

    def __init__(self, name: str, root: pathlib.Path, store_dir: str, state: str) -> None:
        self.name, self.root = name, root
        root.mkdir(parents=True, exist_ok=True)
        self.conn, child = mp.Pipe()
        self.process = mp.get_context("spawn").Process(
            target=_serve, args=(name, str(root), store_dir, state, child), daemon=True
        )
        self.process.start()

    def send(self, fn, *args, **kwargs) -> None:
        self.conn.send((fn, args, kwargs))

    def receive(self):
        if not self.conn.poll(CALL_TIMEOUT):
            raise TimeoutError(f"{self.name} did not answer")
        status, value = self.conn.recv()
        if status == "err":
            raise value
        return value

    def __call__(self, fn, *args, **kwargs):
        self.send(fn, *args, **kwargs)
        return self.receive()

    def drive(self, drive: Drive, method: str, *args, **kwargs):
        return self(_drive_call, drive, method, *args, **kwargs)

    def stop(self) -> None:
        self.conn.send(None)
        self.process.join(10)


# Functions the work processes run (module level, so they pickle by reference).
def _drive_call(drive: Drive, method: str, *args, **kwargs):
    return getattr(drive, method)(*args, **kwargs)


def _timed_get(drive: Drive, path: str, **kwargs):
    start = time.monotonic()
    try:
        drive.get(path, **kwargs)
        outcome = "ok"
    except Exception as exc:  # noqa: BLE001 - the type is the result
        outcome = type(exc).__name__
    return outcome, time.monotonic() - start


def _write(files: dict) -> None:
    write_tree(pathlib.Path.cwd(), files)


def _read(rel: str):
    full = pathlib.Path.cwd() / rel
    return read_tree(full) if full.is_dir() else full.read_bytes()


def _exists(rel: str) -> bool:
    return os.path.lexists(rel)


def _reset() -> None:
    for entry in os.scandir("."):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _symlink(target: str, name: str) -> None:
    os.symlink(target, name)


# -- fixtures -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two running works, ``root.a`` and ``root.b``, over one store (kept for the module)."""
    base = tmp_path_factory.mktemp("drive")
    store_dir = str(base / ".cas")
    Store.open(store_dir, state=str(base / "parent.db")).close()
    works = {
        name: WorkProcess(name, base / name, store_dir, str(base / f"{name}.state.db"))
        for name in ("root.a", "root.b")
    }
    yield base, store_dir, works
    for w in works.values():
        w.stop()


_names = itertools.count()


@pytest.fixture
def env(cluster):
    """Empty work roots and a drive name no other test used."""
    base, store_dir, works = cluster
    for w in works.values():
        w(_reset)
    store = Store.open(store_dir, state=str(base / "parent.db"))
    yield works["root.a"], works["root.b"], f"lit://d{next(_names)}", store
    store.close()


# -- the contract across two work processes ---------------------------------------
def test_put_list_get_delete_files_and_folders_across_works(env):
    a, b, drive_id, store = env
    drive = Drive(drive_id)
    assert b.drive(drive, "list") == []
    a(_write, {"notes.txt": "hello", "data/x.csv": "1,2", "data/sub/y.csv": "3,4"})
    assert a.drive(drive, "put", "notes.txt").number == 1
    assert a.drive(drive, "put", "data").files == 2

    assert b.drive(drive, "list") == ["data", "notes.txt"]
    assert b.drive(drive, "list", "data") == ["sub", "x.csv"]
    assert b.drive(drive, "list", "data/sub") == ["y.csv"]
    assert b.drive(drive, "list", component_name="root.b") == []

    r = b.drive(drive, "get", "notes.txt")
    assert (r.version, r.files_transferred, r.bytes_transferred) == (1, 1, 5)
    assert b(_read, "notes.txt") == b"hello"
    b.drive(drive, "get", "data")
    assert b(_read, "data") == {"x.csv": b"1,2", "sub/y.csv": b"3,4"}
    b(_reset)
    b.drive(drive, "get", "data/sub/y.csv")  # one file out of a folder put whole
    assert b(_read, "data") == {"sub/y.csv": b"3,4"}

    b(_write, {"from_b/r.txt": "bee"})
    b.drive(drive, "put", "from_b/r.txt")
    assert a.drive(drive, "list") == ["data", "from_b", "notes.txt"]
    assert a.drive(drive, "list", component_name="root.a") == ["data", "notes.txt"]
    assert a.drive(drive, "list", "from_b") == ["r.txt"]
    a.drive(drive, "get", "from_b")  # a folder made of puts below it
    assert a(_read, "from_b") == {"r.txt": b"bee"}

    a.drive(drive, "delete", "data")
    assert b.drive(drive, "list") == ["from_b", "notes.txt"]
    with pytest.raises(FileNotFoundError):
        b.drive(drive, "get", "data", overwrite=True)
    a.drive(drive, "delete", "notes.txt")
    b.drive(drive, "delete", "from_b")
    assert a.drive(drive, "list") == []
    assert store.paths(drive_work(drive.name, "root.a")) == []
    assert drive_work(drive.name, "root.b") not in store.works()


def test_put_inside_an_own_folder_updates_that_folder(env):
    a, b, drive_id, store = env
    drive = Drive(drive_id)
    work = drive_work(drive.name, "root.a")
    a(_write, {"data/x.csv": "old", "data/sub/y.csv": "y"})
    a.drive(drive, "put", "data")
    a(_write, {"data/x.csv": "new", "data/deep/er/z.txt": "z"})
    a.drive(drive, "put", "data/x.csv")
    a.drive(drive, "put", "data/deep/er/z.txt")
    assert store.paths(work) == ["data"]  # stored paths of one owner never nest
    assert [v.number for v in store.versions(work, "data")] == [1, 2, 3]
    b.drive(drive, "get", "data")
    assert b(_read, "data") == {"x.csv": b"new", "sub/y.csv": b"y", "deep/er/z.txt": b"z"}

    a.drive(drive, "delete", "data/sub/y.csv")  # a new version of the folder without it
    assert b.drive(drive, "list", "data/sub") == []
    assert b.drive(drive, "list", "data") == ["deep", "sub", "x.csv"]
    with pytest.raises(FileNotFoundError):
        b.drive(drive, "get", "data/sub/y.csv", overwrite=True)
    b.drive(drive, "get", "data", overwrite=True)
    assert b(_read, "data") == {"x.csv": b"new", "deep/er/z.txt": b"z"}

    # Putting a folder takes over earlier puts below it.
    a(_write, {"logs/1.txt": "1", "logs/2.txt": "2"})
    a.drive(drive, "put", "logs/1.txt")
    a.drive(drive, "put", "logs/2.txt")
    assert store.paths(work) == ["data", "logs/1.txt", "logs/2.txt"]
    a.drive(drive, "put", "logs")
    assert store.paths(work) == ["data", "logs"]
    assert b.drive(drive, "list", "logs") == ["1.txt", "2.txt"]


def test_second_put_of_changed_content_stores_only_changed_objects(env):
    a, _, drive_id, store = env
    drive = Drive(drive_id)
    files = {f"ckpt/part{i}.bin": os.urandom(10_000) for i in range(20)}
    files["ckpt/big.bin"] = os.urandom(3 << 20)  # chunked
    a(_write, files)
    before = set(store.objects)
    first = a.drive(drive, "put", "ckpt")
    added = set(store.objects) - before
    assert first.files == 21 and len(added) > 22  # 20 blobs + chunks + manifest

    a(_write, {"ckpt/part3.bin": os.urandom(10_000)})
    before = set(store.objects)
    second = a.drive(drive, "put", "ckpt")
    added = set(store.objects) - before
    assert second.number == 2
    assert added == {second.manifest, store.manifest(second).by_path()["part3.bin"].digest}

    again = a.drive(drive, "put", "ckpt")  # unchanged: nothing new at all
    assert again.number == 2 and set(store.objects) - before == added


def test_get_waits_for_a_file_another_work_puts_later(env):
    a, b, drive_id, _ = env
    drive = Drive(drive_id)
    a(_write, {"late.txt": "finally"})
    b.send(_timed_get, drive, "late.txt", timeout=2)
    time.sleep(1)
    a.drive(drive, "put", "late.txt")
    outcome, elapsed = b.receive()
    assert outcome == "ok" and 0.9 < elapsed < 2.0
    assert b(_read, "late.txt") == b"finally"


def test_get_timeout_raises_after_really_waiting(env):
    _, b, drive_id, _ = env
    outcome, elapsed = b(_timed_get, Drive(drive_id), "never.txt", timeout=2)
    assert outcome == "FileNotFoundError" and 1.9 <= elapsed < 4
    outcome, elapsed = b(_timed_get, Drive(drive_id), "never.txt")
    assert outcome == "FileNotFoundError" and elapsed < 1


# -- errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["s3://shared", "shared", "", "lit://", "lit://a/b", "lit://a/", "lit://..", None, 5]
)
def test_bad_ids_raise_value_error(bad):
    with pytest.raises(ValueError, match="invalid drive id"):
        Drive(bad)


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.put("x"),
        lambda d: d.list(),
        lambda d: d.get("x"),
        lambda d: d.delete("x"),
    ],
)
def test_operations_need_a_running_work(call):
    assert context.current() is None  # as in a Flow: no work context installed
    with pytest.raises(RuntimeError, match="only works inside a running Work"):
        call(Drive("lit://shared"))


def test_pickle_keeps_only_id_and_flag():
    drive = Drive("lit://shared", allow_duplicates=True)
    clone = pickle.loads(pickle.dumps(drive))
    assert clone == drive and clone.name == "shared" and clone.allow_duplicates
    assert drive.__getstate__() == {"id": "lit://shared", "allow_duplicates": True}
    assert Drive("lit://shared") != drive


def test_same_path_from_two_works_is_refused_by_default(env):
    a, b, drive_id, _ = env
    drive = Drive(drive_id)
    a(_write, {"model.pt": "a"})
    b(_write, {"model.pt": "b", "dir/inside.txt": "b"})
    a.drive(drive, "put", "model.pt")
    with pytest.raises(FileExistsError, match="root.a"):
        b.drive(drive, "put", "model.pt")
    assert b.drive(drive, "list") == ["model.pt"]
    a.drive(drive, "put", "model.pt")  # the owner may put it again
    # A folder another work has (made of its puts) counts as taken too.
    a(_write, {"dir/a.txt": "a"})
    a.drive(drive, "put", "dir/a.txt")
    with pytest.raises(FileExistsError, match="root.a"):
        b.drive(drive, "put", "dir")
    b.drive(drive, "put", "dir/inside.txt")  # a different file in that folder is fine
    assert a.drive(drive, "list", "dir") == ["a.txt", "inside.txt"]


def test_duplicates_are_kept_when_allowed_and_get_must_choose(env):
    a, b, drive_id, _ = env
    drive = Drive(drive_id, allow_duplicates=True)
    a(_write, {"model.pt": "from a"})
    b(_write, {"model.pt": "from b"})
    a.drive(drive, "put", "model.pt")
    b.drive(drive, "put", "model.pt")
    assert a.drive(drive, "list") == ["model.pt"]
    with pytest.raises(ValueError, match=r"root\.a, root\.b"):
        a.drive(drive, "get", "model.pt", overwrite=True)
    a.drive(drive, "get", "model.pt", component_name="root.b", overwrite=True)
    assert a(_read, "model.pt") == b"from b"
    with pytest.raises(ValueError, match="several works"):
        b.drive(drive, "get", "model.pt", overwrite=True, timeout=5)  # no waiting on this


def test_concurrent_puts_of_one_path_keep_exactly_one(env):
    a, b, drive_id, store = env
    for i in range(3):
        drive = Drive(f"{drive_id}r{i}")
        a(_write, {"same.txt": "a"})
        b(_write, {"same.txt": "b"})
        a.send(_drive_call, drive, "put", "same.txt")
        b.send(_drive_call, drive, "put", "same.txt")
        outcomes = []
        for w in (a, b):
            try:
                w.receive()
                outcomes.append("ok")
            except FileExistsError:
                outcomes.append("refused")
        assert sorted(outcomes) == ["ok", "refused"]
        owners = [w for w in store.works() if w.startswith(f"drive:{drive.name}/")]
        assert len(owners) == 1


def test_get_errors(env):
    a, b, drive_id, _ = env
    drive = Drive(drive_id)
    a(_write, {"f.txt": "new"})
    a.drive(drive, "put", "f.txt")
    b(_write, {"f.txt": "local"})
    with pytest.raises(FileExistsError):
        b.drive(drive, "get", "f.txt")
    assert b(_read, "f.txt") == b"local"
    b.drive(drive, "get", "f.txt", overwrite=True)
    assert b(_read, "f.txt") == b"new"
    with pytest.raises(FileNotFoundError):
        b.drive(drive, "get", "missing.txt")
    with pytest.raises(FileNotFoundError, match="root.b has"):
        a.drive(drive, "get", "f.txt", component_name="root.b", overwrite=True)
    with pytest.raises(ValueError, match="timeout"):
        b.drive(drive, "get", "f.txt", timeout=-1, overwrite=True)
    with pytest.raises(ValueError, match="escapes"):
        b.drive(drive, "get", "../f.txt")


def test_put_errors(env, cluster):
    a, _, drive_id, _ = env
    drive = Drive(drive_id)
    with pytest.raises(FileNotFoundError):
        a.drive(drive, "put", "not_here.txt")
    with pytest.raises(ValueError, match="escapes"):
        a.drive(drive, "put", "../b/secret.txt")
    with pytest.raises(ValueError, match="outside the work root"):
        a.drive(drive, "put", "/etc/hostname")
    a(_symlink, "/etc", "etc_link")
    with pytest.raises(ValueError, match="outside the work root"):
        a.drive(drive, "put", "etc_link")
    with pytest.raises(ValueError, match="not the root"):
        a.drive(drive, "put", ".")
    assert a.drive(drive, "list") == []
    a(_write, {"inside/ok.txt": "ok"})
    a.drive(drive, "put", str(a.root / "inside" / "ok.txt"))  # absolute, but inside the root
    assert a.drive(drive, "list", "lit://inside") == ["ok.txt"]


def test_delete_and_list_errors(env):
    a, b, drive_id, _ = env
    drive = Drive(drive_id)
    a(_write, {"mine.txt": "a", "folder/in.txt": "a"})
    a.drive(drive, "put", "mine.txt")
    a.drive(drive, "put", "folder")
    with pytest.raises(PermissionError, match="root.a"):
        b.drive(drive, "delete", "mine.txt")
    with pytest.raises(PermissionError):
        b.drive(drive, "delete", "folder/in.txt")
    with pytest.raises(FileNotFoundError):
        b.drive(drive, "delete", "nobody.txt")
    with pytest.raises(FileNotFoundError):
        a.drive(drive, "delete", "folder/nobody.txt")
    assert b.drive(drive, "list") == ["folder", "mine.txt"]  # nothing was removed
    with pytest.raises(FileNotFoundError):
        b.drive(drive, "list", "nowhere")
    with pytest.raises(NotADirectoryError):
        b.drive(drive, "list", "mine.txt")
    with pytest.raises(FileNotFoundError):
        b.drive(drive, "list", "folder", component_name="root.b")


def test_docs_example_producer_and_consumer(env):
    """The exchange shown in docs/drive.md, with the works as real processes."""
    producer, consumer, drive_id, _ = env
    drive = Drive(drive_id)
    consumer.send(_timed_get, drive, "reports/summary.json", timeout=30)
    producer(_write, {"reports/summary.json": '{"accuracy": 0.93}', "reports/notes.txt": "3"})
    producer.drive(drive, "put", "reports")
    outcome, _ = consumer.receive()
    assert outcome == "ok"
    assert consumer(_read, "reports") == {"summary.json": b'{"accuracy": 0.93}'}
    consumer(_write, {"reports/reply.txt": "looks good"})
    consumer.drive(drive, "put", "reports/reply.txt")
    assert producer.drive(drive, "list", "reports") == ["notes.txt", "reply.txt", "summary.json"]
    assert producer.drive(drive, "list", "reports", component_name="root.b") == ["reply.txt"]
    producer.drive(drive, "get", "reports/reply.txt")
    assert producer(_read, "reports/reply.txt") == b"looks good"
