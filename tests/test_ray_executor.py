"""The Ray executor on a real two-node cluster (both nodes on this machine, loopback
only), the store on a moto S3 server: works on different nodes share files as
they do on one machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import ray_apps

from runtime import App
from runtime.executor import StartFailed

pytestmark = pytest.mark.ray

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def launch_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAS_STORE", raising=False)
    return tmp_path


def run_app(app_dir, launch_dir, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "run", str(app_dir / "app.py"), *extra],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def seed_app(tmp_path, example="seed_source_destination.py", app="ray_seed_app.py"):
    """An app folder as a user has it: a seed example and the app pinning its works."""
    folder = tmp_path / "app"
    folder.mkdir()
    shutil.copy(os.path.join(REPO, "examples", example), folder)
    shutil.copy(os.path.join(REPO, "tests", "ray_nodes.py"), folder)
    shutil.copy(os.path.join(REPO, "tests", app), folder / "app.py")
    return folder


def seen(done: subprocess.CompletedProcess) -> list[dict]:
    """What the app's flow printed, one dict per SEEN line."""
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("SEEN ")]
    return [json.loads(line[len("SEEN ") :]) for line in lines]


def test_seed_example_on_two_nodes(ray_address, s3_url, tmp_path, launch_dir, monkeypatch):
    monkeypatch.setenv("CAS_STORE", s3_url)
    (facts,) = seen(run_app(seed_app(tmp_path), launch_dir, "--executor", "ray"))
    source, destination = facts["source"], facts["destination"]
    assert source["node"] != destination["node"]  # two Ray nodes
    assert source["root"] != destination["root"]
    assert destination["root"].endswith(os.path.join("works", "root.destination"))
    # The app's code reached the nodes as a package Ray shipped, not from the app folder.
    assert "runtime_resources" in destination["code"]
    assert str(tmp_path) not in destination["code"]
    assert facts["files"] == {f"part{i}.txt": f"checkpoint part {i}\n" for i in range(3)}
    assert facts["received_bytes"] == 3 * len("checkpoint part 0\n")
    assert facts["reget"] == [0, 0]  # unchanged: nothing moves again


def test_seed_init_example_on_two_nodes(ray_address, s3_url, tmp_path, launch_dir, monkeypatch):
    monkeypatch.setenv("CAS_STORE", s3_url)
    app = seed_app(tmp_path, "seed_deploy_init.py", "ray_seed_init_app.py")
    first, second = seen(run_app(app, launch_dir, "--executor", "ray"))
    assert first["train"]["node"] != first["deploy"]["node"]
    assert first["train"]["root"] != first["deploy"]["root"]
    assert first["origin"] == second["origin"] == "root.train"  # the Path kept its first owner
    assert first["files"] == second["files"] == ["checkpoint_1.ckpt", "checkpoint_2.ckpt"]
    assert [files for files, _ in first["moved"]] == [2]  # held as an attribute: it arrived
    assert [files for files, _ in second["moved"]] == [1]  # only the retrained checkpoint
    assert first["reget"] == second["reget"] == [0, 0]


def test_a_local_store_with_two_nodes_is_refused_before_any_work_starts(ray_address, launch_dir):
    flow = ray_apps.KillOnTwoNodes(kill_after=None)
    with pytest.raises(StartFailed, match=r"(?s)is a folder on this machine.*2 nodes.*s3://"):
        App(flow, store=str(launch_dir / ".cas"), executor="ray").run()
    assert not (launch_dir / ".runtime").exists() and not (launch_dir / ".cas").exists()
    assert flow.sparse.pid == 0  # never ran


def test_the_refusal_is_one_line_from_the_command_line(ray_address, tmp_path, launch_dir):
    done = run_app(seed_app(tmp_path), launch_dir, "--executor", "ray")
    assert done.returncode == 1
    assert "runtime: error: the store" in done.stderr and "Traceback" not in done.stderr


def test_origin_killed_mid_request_gives_an_error_within_the_timeout(ray_address, s3_url):
    flow = ray_apps.KillOnTwoNodes(kill_after=0.5)
    App(flow, store=s3_url, executor="ray").run()
    assert flow.waiter.outcome.startswith("OriginError"), flow.waiter.outcome
    assert "root.sparse" in flow.waiter.outcome and "big.bin" in flow.waiter.outcome
    assert flow.waiter.seconds < 10


def test_a_background_trainer_on_one_node_serves_a_server_on_the_other(ray_address, s3_url):
    flow = ray_apps.BackgroundOnTwoNodes(steps=10)
    App(flow, store=s3_url, executor="ray").run()
    assert flow.polled == sorted(flow.polled) and flow.polled[-1] > 0  # progress, live
    assert flow.server.seen == sorted(flow.server.seen) and flow.server.seen[-1] == 10
    assert flow.trainer.step == 10


def test_stopping_a_running_background_work_interrupts_and_persists_it(ray_address, s3_url):
    flow = ray_apps.BackgroundOnTwoNodes(steps=None)
    App(flow, store=s3_url, executor="ray").run()
    stopped_at = flow.trainer.step
    assert len(set(flow.server.seen[:-1])) >= 3  # fetched from the running trainer
    assert flow.server.seen[:-1] == sorted(flow.server.seen[:-1])
    assert stopped_at >= flow.polled[-1] > 0
    # The persisted checkpoint is the last step (the interrupt may land between writing
    # the file and counting the step).
    assert flow.server.seen[-1] - stopped_at in (0, 1)


def test_the_local_executor_never_imports_ray(launch_dir):
    code = (
        "import sys, runtime.__main__ as m;"
        f"m.main(['run', {os.path.join(REPO, 'examples', 'seed_source_destination.py')!r}]);"
        "assert 'ray' not in sys.modules, 'the local executor imported ray'"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CAS_EXECUTOR", "RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=launch_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "received ['part0.txt', 'part1.txt', 'part2.txt']" in done.stdout
