import multiprocessing as mp
import pathlib

from conftest import read_tree, write_tree

from cas_storage import Store


def _snapshot_worker(store_dir: str, state: str, src: str, go) -> int:
    store = Store.open(store_dir, state=state)
    go.wait()
    return store.snapshot("root.train", "ckpt", src).number


def test_eight_processes_snapshot_one_path_at_once(tmp_path: pathlib.Path):
    store_dir = str(tmp_path / ".cas")
    Store.open(store_dir, state=str(tmp_path / "s.db")).close()
    srcs = [write_tree(tmp_path / f"src{i}", {"w.bin": f"weights {i}" * 1000}) for i in range(8)]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        go = manager.Event()
        with ctx.Pool(8) as pool:
            pending = [
                pool.apply_async(
                    _snapshot_worker, (store_dir, str(tmp_path / f"s{i}.db"), str(s), go)
                )
                for i, s in enumerate(srcs)
            ]
            go.set()
            numbers = sorted(p.get(timeout=120) for p in pending)
    assert numbers == list(range(1, 9))
    store = Store.open(store_dir, state=str(tmp_path / "s.db"))
    versions = store.versions("root.train", "ckpt")
    assert [v.number for v in versions] == list(range(1, 9))
    assert len({v.manifest for v in versions}) == 8
    seen = set()
    for v in versions:
        store.checkout("root.train", "ckpt", tmp_path / f"out{v.number}", version=v.number)
        seen.add(read_tree(tmp_path / f"out{v.number}")["w.bin"])
    assert seen == {(f"weights {i}" * 1000).encode() for i in range(8)}
