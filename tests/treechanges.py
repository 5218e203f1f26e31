"""A sample tree of every kind a manifest holds, and the changes a quick "unchanged"
check must notice: content, kind, mode, link target, a name more or less.

Shared by the re-get's checks (``test_held_as_recorded.py``, ``test_checkout_stamp.py``)
and the re-put's (``test_snapshot_stamp.py``).
"""

from __future__ import annotations

import os
import pathlib
import random
import stat
from collections.abc import Callable

from conftest import write_tree


def sample_tree(root: pathlib.Path) -> pathlib.Path:
    """Files (one executable), nested folders (one with its own mode), an empty folder
    and a link inside the tree."""
    write_tree(
        root,
        {"a.txt": "alpha", "run.sh": "#!/bin/sh\n", "sub/b.bin": b"\0" * 100, "sub/deep/c": "c"},
    )
    os.chmod(root / "run.sh", 0o755)
    (root / "empty").mkdir()
    os.chmod(root / "sub" / "deep", 0o750)
    os.symlink("sub/b.bin", root / "link")
    return root


def listing(root: pathlib.Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Everything a checkout sets below ``root``: kind, mode, content or link target."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = pathlib.Path(dirpath, name)
            st = full.lstat()
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), full.read_bytes())
    return out


def rewrite_keeping_times(dest: pathlib.Path) -> None:
    """Same size, same mtime: only the ctime (which no user can set) tells."""
    st = (dest / "a.txt").stat()
    (dest / "a.txt").write_text("ALPHA")
    os.utime(dest / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))


def replace_by_link(dest: pathlib.Path) -> None:
    os.unlink(dest / "a.txt")
    os.symlink("run.sh", dest / "a.txt")


def replace_file_by_folder(dest: pathlib.Path) -> None:
    os.unlink(dest / "sub" / "deep" / "c")
    (dest / "sub" / "deep" / "c").mkdir()


def retarget_link(dest: pathlib.Path) -> None:
    os.unlink(dest / "link")
    os.symlink("a.txt", dest / "link")


def replace_file_by_copy(dest: pathlib.Path) -> None:
    """The same bytes and mode in a new inode: a checkout rewrites nothing, but the
    record no longer vouches, so the quick check must leave it to ``plan``."""
    data = (dest / "sub" / "b.bin").read_bytes()
    os.unlink(dest / "sub" / "b.bin")
    (dest / "sub" / "b.bin").write_bytes(data)
    os.chmod(dest / "sub" / "b.bin", 0o644)


CHANGES: dict[str, Callable[[pathlib.Path], object]] = {
    "content rewritten, times restored": rewrite_keeping_times,
    "file mode": lambda d: os.chmod(d / "run.sh", 0o700),
    "folder mode": lambda d: os.chmod(d / "sub" / "deep", 0o755),
    "file added": lambda d: (d / "sub" / "new").write_text("x"),
    "hidden file added": lambda d: (d / ".new").write_text("x"),
    "folder added": lambda d: (d / "empty" / "inner").mkdir(),
    "file removed": lambda d: os.unlink(d / "sub" / "deep" / "c"),
    "empty folder removed": lambda d: os.rmdir(d / "empty"),
    "link retargeted": retarget_link,
    "link removed": lambda d: os.unlink(d / "link"),
    "file replaced by a link": replace_by_link,
    "file replaced by a folder": replace_file_by_folder,
    "file renamed": lambda d: os.rename(d / "a.txt", d / "b.txt"),
    # As many names as before: a check that counted names would miss it.
    "link swapped for a file of another name": lambda d: (
        os.unlink(d / "link"),
        (d / "other").write_text("x"),
    ),
}


#: What ``change_at_random`` picks from: files of ``sample_tree``, and two it lacks.
RACE_NAMES = ("a.txt", "run.sh", "sub/b.bin", "sub/deep/c", "sub/new", "empty/more")


def change_at_random(r: int, folder: pathlib.Path) -> None:
    """Round ``r``'s change to a ``sample_tree`` that other processes read or write
    meanwhile: new bytes of the same size, a file removed or added, a folder's or a
    file's mode, a link retargeted; or nothing (one round in six). A file that
    vanishes under it (another process swapped it out) ends the change."""
    rng = random.Random(r)
    name = folder / rng.choice(RACE_NAMES)
    what = rng.randrange(6)
    try:
        if what == 0 and name.is_file():
            name.write_bytes(os.urandom(name.stat().st_size))
        elif what == 1:
            if name.exists():
                os.unlink(name)
            else:
                name.write_text(f"round {r}")
        elif what == 2:
            os.chmod(folder / "sub", rng.choice([0o755, 0o750]))
        elif what == 3 and name.is_file():
            os.chmod(name, rng.choice([0o644, 0o755]))
        elif what == 4 and (folder / "link").is_symlink():
            os.unlink(folder / "link")
            os.symlink(rng.choice(["a.txt", "sub/b.bin"]), folder / "link")
    except (FileNotFoundError, NotADirectoryError):
        pass
