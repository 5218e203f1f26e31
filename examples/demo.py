"""Store demo: snapshot a folder, change 1 file, check both versions out elsewhere.

Run: python examples/demo.py   (uses ./.cas, or $CAS_STORE)
"""

import os
import pathlib
import tempfile

from cas_storage import Store


def main() -> None:
    store = Store.open()
    work = pathlib.Path(tempfile.mkdtemp(prefix="cas-demo-"))
    ckpt = work / "outputs" / "ckpt"
    ckpt.mkdir(parents=True)
    for i in range(4):
        (ckpt / f"layer{i}.bin").write_bytes(os.urandom(1024 * 1024))
    v1 = store.snapshot("demo.train", "outputs/ckpt", ckpt)
    print(f"snapshot v{v1.number}: {v1.files} files, {v1.bytes:,} bytes")

    dest = work / "serving" / "ckpt"
    r = store.checkout("demo.train", "outputs/ckpt", dest)
    print(
        f"checkout v{r.version}: {r.files_transferred} files, {r.bytes_transferred:,} bytes moved"
    )

    (ckpt / "layer2.bin").write_bytes(os.urandom(1024 * 1024))
    v2 = store.snapshot("demo.train", "outputs/ckpt", ckpt)
    print(f"snapshot v{v2.number}: one file changed")
    r = store.checkout("demo.train", "outputs/ckpt", dest, overwrite=True)
    print(
        f"checkout v{r.version}: {r.files_transferred} files, {r.bytes_transferred:,} bytes moved"
    )
    r = store.checkout("demo.train", "outputs/ckpt", dest, overwrite=True)
    print(
        f"checkout v{r.version} again: {r.files_transferred} files, "
        f"{r.bytes_transferred:,} bytes moved"
    )
    print(f"store at {store.url}")


if __name__ == "__main__":
    main()
