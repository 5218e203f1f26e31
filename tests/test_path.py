import copy
import os
import pathlib
import pickle

import pytest
from conftest import write_tree

from cas_storage import Path, Store, context
from cas_storage.context import WorkContext


def test_lit_prefix_and_pathlib_behaviour():
    p = Path("lit://outputs/checkpoints", origin="root.source")
    assert str(p) == "outputs/checkpoints"
    assert isinstance(p, pathlib.Path)
    assert p == pathlib.Path("outputs/checkpoints") and hash(p) == hash(pathlib.Path(str(p)))
    assert Path("plain").origin_name == ""
    assert os.fspath(Path("lit://a/b")) == "a/b"
    assert repr(p) == "Path('outputs/checkpoints', origin='root.source')"


@pytest.mark.parametrize(
    "derive",
    [
        lambda p: p / "a",
        lambda p: p.joinpath("a", "b"),
        lambda p: p.parent,
        lambda p: p.parents[0],
        lambda p: p.with_name("other"),
        lambda p: p.with_suffix(".bin"),
        lambda p: p.with_stem("x"),
        lambda p: (p / "x" / "y").relative_to("outputs"),
        lambda p: p.absolute(),
        lambda p: Path(p),
        lambda p: Path(p, "deeper"),
        lambda p: pathlib.Path("/base") / p,
    ],
)
def test_derived_paths_keep_the_origin(derive):
    p = Path("lit://outputs/ckpt", origin="root.source")
    derived = derive(p)
    assert isinstance(derived, Path)
    assert derived.origin_name == "root.source"


def test_listing_and_globbing_keep_the_origin(tmp_path):
    write_tree(tmp_path, {"d/a.txt": "a", "d/sub/b.txt": "b"})
    p = Path(tmp_path / "d", origin="root.w")
    assert {c.origin_name for c in p.iterdir()} == {"root.w"}
    assert {c.origin_name for c in p.glob("*.txt")} == {"root.w"}
    assert {c.origin_name for c in p.rglob("*.txt")} == {"root.w"}
    assert len(list(p.rglob("*.txt"))) == 2


def test_pickle_and_copy_keep_the_origin():
    p = Path("lit://outputs/ckpt", origin="root.source")
    for clone in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p), copy.copy(p)):
        assert clone == p and clone.origin_name == "root.source" and isinstance(clone, Path)


def test_file_operations_work_unchanged(tmp_path):
    p = Path(tmp_path / "f.txt", origin="root.w")
    with open(p, "w") as out:
        out.write("hi")
    assert p.read_text() == "hi" and os.path.exists(p) and p.stat().st_size == 2


@pytest.mark.parametrize("op", ["get", "exists_local", "exists_remote", "versions"])
def test_sharing_needs_a_running_work(op):
    with pytest.raises(RuntimeError, match="only works inside a running Work"):
        getattr(Path("lit://x", origin="root.w"), op)()


@pytest.fixture
def two_works(tmp_path):
    """A producer and a consumer work root over one real store, no runtime."""
    store = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    src_root, dst_root = tmp_path / "source", tmp_path / "dest"
    dst_root.mkdir()
    write_tree(src_root, {"outputs/ckpt/model.pt": b"weights", "outputs/ckpt/cfg.json": "{}"})
    with context.installed(WorkContext("root.source", src_root, store)):
        store.snapshot("root.source", "outputs/ckpt", src_root / "outputs" / "ckpt")
    yield store, WorkContext("root.dest", dst_root, store)
    store.close()


def test_get_and_exists_through_an_installed_context(two_works):
    store, consumer = two_works
    ckpt = Path("lit://outputs/ckpt", origin="root.source")
    with context.installed(consumer):
        assert ckpt.exists_remote() and not ckpt.exists_local()
        r = ckpt.get()
        assert (r.version, r.files_transferred, r.bytes_transferred) == (1, 2, 9)
        assert ckpt.exists_local()
        assert (consumer.root / "outputs/ckpt/model.pt").read_bytes() == b"weights"
        with pytest.raises(FileExistsError):
            ckpt.get()
        again = ckpt.get(overwrite=True)
        assert (again.files_transferred, again.bytes_transferred) == (0, 0)
        assert [v.number for v in ckpt.versions()] == [1]
        # A derived path is fetched alone.
        model = ckpt / "model.pt"
        (consumer.root / "solo").mkdir()
        assert model.exists_remote()
        assert not (ckpt / "nope").exists_remote()
        os.remove(consumer.root / "outputs/ckpt/model.pt")
        assert model.get().files_transferred == 1
        missing = Path("lit://not/there", origin="root.source")
        assert not missing.exists_remote()
        with pytest.raises(FileNotFoundError):
            missing.get()
        with pytest.raises(ValueError, match="escapes"):
            Path("lit://../../etc", origin="root.source").get()
        with pytest.raises(ValueError, match="not attached"):
            Path("lit://outputs/ckpt").get()
