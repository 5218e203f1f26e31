import os
import pathlib
import shutil
import socket
import stat

import pytest
from conftest import read_tree, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas_storage import Store
from cas_storage import checkout as checkout_module
from cas_storage.errors import CorruptObject, UnknownVersion
from cas_storage.kernelcopy import KERNEL_COPY_MIN

FILE_MODES = [0o644, 0o600, 0o755, 0o444, 0o700, 0o640]
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)
trees = st.recursive(
    st.tuples(st.binary(max_size=300), st.sampled_from(FILE_MODES)),
    lambda children: st.dictionaries(names, children, max_size=4),
    max_leaves=12,
)


def materialize(root: pathlib.Path, tree) -> None:
    root.mkdir()
    for name, value in tree.items():
        if isinstance(value, dict):
            materialize(root / name, value)
        else:
            content, mode = value
            (root / name).write_bytes(content)
            os.chmod(root / name, mode)


def describe(root: pathlib.Path) -> dict:
    """Names, kinds, modes and bytes of everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = pathlib.Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            mode = stat.S_IMODE(full.lstat().st_mode)
            out[rel] = (mode, None if full.is_dir() else full.read_bytes())
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=st.dictionaries(names, trees, max_size=5))
def test_round_trip_of_any_tree(tmp_path, tree):
    work = tmp_path / f"case{os.urandom(4).hex()}"
    work.mkdir()
    store = Store.open(work / ".cas", state=str(work / "state.db"))
    materialize(work / "src", tree)
    store.snapshot("w", "data", work / "src")
    store.checkout("w", "data", work / "dst")
    assert describe(work / "dst") == describe(work / "src")
    store.close()
    shutil.rmtree(work)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_checked_out_files_have_their_stored_modes_whatever_the_umask(store, tmp_path, umask):
    """Files are created with their mode and chmod-ed only when the umask took bits."""
    modes = {"rw": 0o644, "x": 0o755, "private": 0o600, "ro": 0o444, "all": 0o666}
    src = tmp_path / "src"
    src.mkdir()
    for name, mode in modes.items():
        (src / name).write_text(name)
        os.chmod(src / name, mode)
    store.snapshot("w", "p", src)
    (src / "ro").chmod(0o644)
    (src / "ro").write_text("changed")  # an update stages the file it writes anew
    (src / "ro").chmod(0o444)
    before = os.umask(umask)
    try:
        store.checkout("w", "p", tmp_path / "dst", version=1)
        got = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "dst").iterdir()}
        assert got == modes
        store.snapshot("w", "p", src)
        store.checkout("w", "p", tmp_path / "dst", overwrite=True)
    finally:
        os.umask(before)
    assert describe(tmp_path / "dst") == describe(src)
    assert (tmp_path / "dst" / "ro").read_text() == "changed"


def test_a_large_file_just_checked_out_is_not_hashed_again(store, tmp_path, monkeypatch):
    """The next checkout believes the stat cache about a large file a checkout wrote
    moments ago (inside the racy window): its ctime is past its mtime."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(KERNEL_COPY_MIN + 4096))
    (src / "small.txt").write_text("small")
    store.snapshot("w", "p", src)
    dst = tmp_path / "dst"
    store.checkout("w", "p", dst)
    hashed = []
    real = checkout_module.digest_file
    monkeypatch.setattr(checkout_module, "digest_file", lambda p: hashed.append(p) or real(p))
    assert store.checkout("w", "p", dst, overwrite=True).files_transferred == 0
    assert str(dst / "big.bin") not in hashed


def test_versions_advance_only_on_change(store, tmp_path):
    src = write_tree(tmp_path / "src", {"a.txt": "one", "sub/b.bin": b"\x00" * 100})
    v1 = store.snapshot("root.train", "outputs", src)
    assert (v1.number, v1.files, v1.bytes) == (1, 2, 103)
    assert store.snapshot("root.train", "outputs", src) == v1  # identical: no new version
    (src / "a.txt").write_text("two!")
    v2 = store.snapshot("root.train", "outputs", src)
    assert v2.number == 2 and v2.manifest != v1.manifest
    assert [v.number for v in store.versions("root.train", "outputs")] == [1, 2]
    assert store.exists("root.train", "outputs") and not store.exists("root.train", "other")

    store.checkout("root.train", "outputs", tmp_path / "old", version=1)
    assert (tmp_path / "old" / "a.txt").read_text() == "one"
    with pytest.raises(UnknownVersion):
        store.checkout("root.train", "outputs", tmp_path / "nope", version=9)
    with pytest.raises(FileNotFoundError):
        store.checkout("root.other", "outputs", tmp_path / "nope")


def test_checkout_moves_only_what_differs(store, tmp_path):
    src = write_tree(tmp_path / "src", {f"f{i}": os.urandom(1000) for i in range(10)})
    store.snapshot("w", "p", src)
    first = store.checkout("w", "p", tmp_path / "dst")
    assert (first.version, first.files_transferred, first.bytes_transferred) == (1, 10, 10_000)
    again = store.checkout("w", "p", tmp_path / "dst", overwrite=True)
    assert (again.files_transferred, again.bytes_transferred) == (0, 0)

    (src / "f3").write_bytes(b"changed")
    (src / "f4").unlink()
    write_tree(src, {"new/g": "g"})
    store.snapshot("w", "p", src)
    swap = store.checkout("w", "p", tmp_path / "dst", overwrite=True)
    assert (swap.version, swap.files_transferred, swap.bytes_transferred) == (2, 2, 8)
    assert read_tree(tmp_path / "dst") == read_tree(src)
    assert not (tmp_path / "dst" / "f4").exists()


def test_checkout_without_overwrite_refuses_existing(store, tmp_path):
    src = write_tree(tmp_path / "src", {"a": "a"})
    store.snapshot("w", "p", src)
    (tmp_path / "dst").mkdir()
    with pytest.raises(FileExistsError, match="dst"):
        store.checkout("w", "p", tmp_path / "dst")


def test_local_edits_are_restored_on_overwrite(store, tmp_path):
    src = write_tree(tmp_path / "src", {"a": "original", "b": "keep"})
    store.snapshot("w", "p", src)
    store.checkout("w", "p", tmp_path / "dst")
    (tmp_path / "dst" / "a").write_text("local edit, same len")
    (tmp_path / "dst" / "extra").write_text("not in the snapshot")
    r = store.checkout("w", "p", tmp_path / "dst", overwrite=True)
    assert r.files_transferred == 1
    assert read_tree(tmp_path / "dst") == {"a": b"original", "b": b"keep"}


def test_single_file_snapshot_and_type_swaps(store, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    v = store.snapshot("w", "model.pt", tmp_path / "model.pt")
    assert v.files == 1
    store.checkout("w", "model.pt", tmp_path / "out" / "model.pt")
    assert (tmp_path / "out" / "model.pt").read_bytes() == b"weights"
    # A folder snapshot replaces a file at the destination, and back.
    write_tree(tmp_path / "dir", {"x": "x"})
    store.snapshot("w", "thing", tmp_path / "dir")
    store.checkout("w", "thing", tmp_path / "out" / "model.pt", overwrite=True)
    assert (tmp_path / "out" / "model.pt" / "x").read_text() == "x"
    store.checkout("w", "model.pt", tmp_path / "out" / "model.pt", overwrite=True)
    assert (tmp_path / "out" / "model.pt").read_bytes() == b"weights"


def test_symlinks_are_kept_as_links_and_escaping_ones_skipped(store, tmp_path):
    src = write_tree(tmp_path / "src", {"data/real.txt": "real"})
    os.symlink("data/real.txt", src / "inside")
    os.symlink("/etc/passwd", src / "outside")
    with pytest.warns(UserWarning, match="outside"):
        store.snapshot("w", "p", src)
    store.checkout("w", "p", tmp_path / "dst")
    assert os.readlink(tmp_path / "dst" / "inside") == "data/real.txt"
    assert (tmp_path / "dst" / "inside").read_text() == "real"
    assert not os.path.lexists(tmp_path / "dst" / "outside")


def test_sockets_are_skipped_with_a_warning(store, tmp_path):
    src = write_tree(tmp_path / "src", {"a": "a"})
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "ctl.sock"))
    try:
        with pytest.warns(UserWarning, match="ctl.sock"):
            v = store.snapshot("w", "p", src)
    finally:
        sock.close()
    assert v.files == 1


def test_corrupt_object_never_reaches_destination(store, tmp_path):
    src = write_tree(tmp_path / "src", {"good": "good", "bad": "precious"})
    store.snapshot("w", "p", src)
    digest = next(
        e.digest for e in store.manifest(store.version("w", "p")).files if e.path == "bad"
    )
    obj = store.objects.path(digest)
    os.chmod(obj, 0o644)
    pathlib.Path(obj).write_bytes(b"precioux")
    with pytest.raises(CorruptObject) as caught:
        store.checkout("w", "p", tmp_path / "dst")
    assert digest in str(caught.value) and "bad" in str(caught.value)
    assert not (tmp_path / "dst").exists()  # a fresh folder is built aside, never half-made
    # An existing destination keeps its old file rather than receiving damaged bytes.
    write_tree(tmp_path / "dst", {"bad": "old content"})
    with pytest.raises(CorruptObject):
        store.checkout("w", "p", tmp_path / "dst", overwrite=True)
    assert (tmp_path / "dst" / "bad").read_text() == "old content"
    assert not [n for n in os.listdir(tmp_path / "dst") if "cas-tmp" in n]


def test_unchanged_files_are_not_read_again(store, tmp_path, monkeypatch):
    src = write_tree(tmp_path / "src", {f"f{i}": f"content {i}" for i in range(20)})
    store.snapshot("w", "p", src)
    # Age the files past the racy window so the stat cache may vouch for them.
    for i in range(20):
        os.utime(src / f"f{i}", ns=(1_000_000_000, 1_000_000_000))
    store.snapshot("w", "p", src)  # records the aged stats
    (src / "f0").write_text("changed")
    opened = []
    real_open = os.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    store.snapshot("w", "p", src)
    monkeypatch.undo()
    reads = [p for p in opened if p.startswith(str(src))]
    assert reads == [str(src / "f0")]


def test_a_manifest_this_machine_checked_out_is_not_validated_again(tmp_path, monkeypatch):
    from cas_storage.manifest import Manifest

    state = str(tmp_path / "state.db")
    src = write_tree(tmp_path / "src", {"a": "one", "b/c": "two"})
    first = Store.open(tmp_path / ".cas", state=state)
    v1 = first.snapshot("w", "p", src)
    (src / "a").write_text("changed")
    v2 = first.snapshot("w", "p", src)
    first.checkout("w", "p", tmp_path / "dest", version=1)
    validated = []
    real = Manifest.validate
    monkeypatch.setattr(Manifest, "validate", lambda m: (validated.append(m), real(m))[1])

    # New processes (new Stores: nothing memoized) reading the version checked out.
    again = Store.open(tmp_path / ".cas", state=state)
    again.checkout("w", "p", tmp_path / "dest", version=1, overwrite=True)
    again.checkout("w", "p", tmp_path / "elsewhere", version=1)
    assert Store.open(tmp_path / ".cas", state=state).manifest(v1).kind == "dir"
    assert validated == []
    # A manifest never checked out here is validated as it is read, once per process.
    third = Store.open(tmp_path / ".cas", state=state)
    third.manifest(v2)
    third.checkout("w", "p", tmp_path / "dest", overwrite=True)
    assert len(validated) == 1
    assert read_tree(tmp_path / "dest") == read_tree(src)


def test_a_get_after_a_put_in_one_process_decodes_no_manifest(tmp_path, monkeypatch):
    from cas_storage.manifest import Manifest

    state = str(tmp_path / "state.db")
    src = write_tree(tmp_path / "src", {"a": "one", "b/c": "two"})
    store = Store.open(tmp_path / ".cas", state=state)
    decoded = []
    real = Manifest.decode

    def counting(data, **kw):
        decoded.append(1)
        return real(data, **kw)

    monkeypatch.setattr(Manifest, "decode", staticmethod(counting))
    store.snapshot("w", "p", src)
    store.checkout("w", "p", tmp_path / "dest")
    (src / "a").write_text("changed")
    store.snapshot("w", "p", src)  # a new version
    store.checkout("w", "p", tmp_path / "dest", overwrite=True)
    # In a new process, an unchanged re-put builds the manifest it finds recorded.
    again = Store.open(tmp_path / ".cas", state=state)
    again.snapshot("w", "p", src)
    again.checkout("w", "p", tmp_path / "again")
    assert decoded == []  # the manifests each process built are the ones it got
    assert read_tree(tmp_path / "dest") == read_tree(tmp_path / "again") == read_tree(src)
    # A process that built nothing reads the manifest from the store.
    Store.open(tmp_path / ".cas", state=state).checkout("w", "p", tmp_path / "other")
    assert decoded == [1]
    assert read_tree(tmp_path / "other") == read_tree(src)


def test_bad_keys_are_rejected(store, tmp_path):
    write_tree(tmp_path / "src", {"a": "a"})
    for bad in ["../escape", "/abs", ""]:
        with pytest.raises(ValueError):
            store.snapshot("w", bad, tmp_path / "src")
    with pytest.raises(ValueError, match="work"):
        store.snapshot("", "p", tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="missing"):
        store.snapshot("w", "p", tmp_path / "missing")


def test_snapshot_at_records_one_version_of_the_holding_folder(store, tmp_path):
    src = write_tree(tmp_path / "w" / "data", {"a.txt": "a", "sub/b.txt": "b"})
    store.snapshot("w", "data", src)
    write_tree(src, {"sub/b.txt": "B2", "sub/new/c.txt": "c"})
    v = store.snapshot("w", "data", src / "sub", at="sub")
    # One new version of the folder itself, no other stored path (no temporary key).
    assert v.number == 2 and store.paths("w") == ["data"]
    store.checkout("w", "data", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {
        "a.txt": b"a",
        "sub/b.txt": b"B2",
        "sub/new/c.txt": b"c",
    }


def test_locate_finds_stored_paths_their_insides_and_folders_of_puts(store, tmp_path):
    store.snapshot("w", "data", write_tree(tmp_path / "d", {"x/y.txt": "y"}))
    store.snapshot("w", "logs/a", write_tree(tmp_path / "a", {"1.txt": "1"}))
    store.snapshot("w", "logs/b", write_tree(tmp_path / "b", {"2.txt": "2"}))
    assert store.locate("w", "data").stored == "data"
    found = store.locate("w", "data/x/y.txt")
    assert (found.stored, found.inner) == ("data", "x/y.txt")
    assert store.locate("w", "data/nothing") is None
    assert store.locate("w", "logs").below == ("logs/a", "logs/b")
    assert b"".join(store.read(store.latest("w", "data"), "x/y.txt")) == b"y"
    with pytest.raises(IsADirectoryError):
        list(store.read(store.latest("w", "data"), "x"))


def test_drop_is_compare_and_delete(store, tmp_path):
    src = write_tree(tmp_path / "s", {"f": "one"})
    first = store.snapshot("w", "p", src)
    store.drop("w", "p")
    write_tree(src, {"f": "two"})
    again = store.snapshot("w", "p", src)
    assert again.number == first.number == 1
    store.catalog.delete(first)  # a stale drop of the old record leaves the new one
    assert store.versions("w", "p") == [again]
