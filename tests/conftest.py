import os
import pathlib

import pytest

from cas_storage import Store


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Store:
    s = Store.open(tmp_path / ".cas", state=str(tmp_path / "state.db"))
    yield s
    s.close()


def write_tree(root: pathlib.Path, files: dict[str, bytes | str]) -> pathlib.Path:
    """Create ``files`` (relative path -> content) under ``root``."""
    for rel, content in files.items():
        full = root / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def read_tree(root: pathlib.Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = pathlib.Path(dirpath, name)
            if full.is_file() and not full.is_symlink():
                out[full.relative_to(root).as_posix()] = full.read_bytes()
    return out


#: Executors the runtime tests run under (the Ray executor's tests add "ray").
EXECUTORS = ["local"]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The executor name for a runtime test; apps and launched subprocesses pick it up."""
    monkeypatch.setenv("CAS_EXECUTOR", request.param)
    return request.param
