import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid

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


#: Executors the runtime tests run under; "ray" on a one-node Ray cluster of its own.
EXECUTORS = ["local", pytest.param("ray", marks=pytest.mark.ray)]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The executor name for a runtime test; apps and launched subprocesses pick it up."""
    monkeypatch.setenv("CAS_EXECUTOR", request.param)
    if request.param == "ray":
        monkeypatch.setenv("RAY_ADDRESS", request.getfixturevalue("ray_one_node"))
    return request.param


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback with a bucket ``cas-bucket``; AWS_* point at it.

    The variables stay set for the session, so processes the tests spawn (other
    "machines") reach the same server with their own s3fs clients.
    """
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        raise RuntimeError("moto S3 server did not start")
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("cas-bucket")
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    """A fresh, empty store URL on the moto server."""
    return f"s3://cas-bucket/{uuid.uuid4().hex}"


#: App files the Ray tests copy into an app folder: they import the examples beside them
#: there, so they are not importable here (and --doctest-modules must not import them).
collect_ignore = ["ray_seed_app.py", "ray_seed_init_app.py"]


from ray_fixtures import ray_address, ray_cluster, ray_one_node  # noqa: E402, F401


def pytest_ignore_collect(collection_path: pathlib.Path, config: pytest.Config) -> bool | None:
    """Collect only test modules here: with --doctest-modules (for cas_storage's doctests)
    pytest would import every helper module too, and some (Ray apps) need optional extras."""
    if collection_path.suffix == ".py" and not collection_path.name.startswith("test_"):
        return collection_path.name != "conftest.py"
    return None


@pytest.fixture()
def surveys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders ``snapshot.survey`` walked: a re-put the stamp answered walks none."""
    walked: list[str] = []
    from cas_storage import snapshot as snapshot_module

    survey = snapshot_module.survey

    def counting(known, source):  # type: ignore[no-untyped-def]
        walked.append(source)
        return survey(known, source)

    monkeypatch.setattr(snapshot_module, "survey", counting)
    return walked
