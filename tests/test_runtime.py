"""The runtime with real work processes: transfer, persistence, failures, timeouts."""

import os
import shutil
import subprocess
import sys
import time

import pytest
import rt_apps

from runtime import App, WorkFailed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def launch_dir(tmp_path, monkeypatch, executor):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAS_STORE", raising=False)
    return tmp_path


def run_example(name: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "run", os.path.join(REPO, "examples", name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_seed_source_to_destination_example(launch_dir):
    done = run_example("seed_source_destination.py", launch_dir)
    assert done.returncode == 0, done.stderr
    works = launch_dir / ".runtime" / "root" / "works"
    assert "received ['part0.txt', 'part1.txt', 'part2.txt']" in done.stdout
    got = sorted(os.listdir(works / "root.destination" / "outputs" / "checkpoints"))
    assert got == ["part0.txt", "part1.txt", "part2.txt"]
    assert (works / "root.source").is_dir() and (launch_dir / ".cas" / "catalog.db").is_file()


def test_seed_train_deploy_example(launch_dir):
    done = run_example("seed_train_deploy.py", launch_dir)
    assert done.returncode == 0, done.stderr
    assert "loaded 2 checkpoints" in done.stdout


def test_get_semantics_between_live_works():
    steps = [
        "exists",
        "get",
        "get_overwrite",
        "read",
        "missing",
        "missing_exists",
        "log_dir",
        "derived",
    ]
    flow = rt_apps.GetFlow(steps=steps)
    App(flow).run()
    r = flow.consumer.results
    assert r["received"] == [2]  # the argument arrived before run started
    assert r["exists"] == [True, True]
    assert r["get"].startswith("FileExistsError")
    assert r["get_overwrite"][1:] == [0, 0]  # unchanged: nothing moves
    assert r["read"] == "v1"
    assert r["missing"].startswith("FileNotFoundError")
    assert r["missing_exists"] is False
    assert r["log_dir"] == ["str", False]  # plain strings are never transferred
    assert r["derived"] == [1, "v1"]  # a file inside a shared folder, fetched alone
    assert flow.consumer.root_dir != flow.producer.ckpt  # each work has its own root
    assert flow.consumer.root_dir.endswith("root.consumer")


def test_files_arrive_from_a_stopped_origin():
    flow = rt_apps.GetFlow(stop_producer=True, steps=["exists", "read"])
    App(flow).run()
    assert flow.consumer.results["received"] == [2]
    assert flow.consumer.results["exists"] == [True, True]
    assert flow.consumer.results["read"] == "v1"


def test_a_raising_work_fails_the_flow_but_its_paths_persist():
    flow = rt_apps.RaiseFlow()
    with pytest.raises(WorkFailed) as caught:
        App(flow).run()
    assert caught.value.work == "root.producer"
    assert "ValueError: training diverged" in str(caught.value)
    assert flow.consumer.results["read"] == "made before the error"


def test_a_work_that_exits_hard_is_reported_and_its_persisted_paths_remain():
    flow = rt_apps.ExitFlow()
    with pytest.raises(WorkFailed, match="(?s)root.origin.*exited unexpectedly"):
        App(flow).run()
    assert flow.consumer.results["read"] == "persisted before exit"


def test_origin_killed_during_a_get_gives_a_clear_error_quickly():
    flow = rt_apps.KillFlow(kill_after=0.5)
    start = time.monotonic()
    App(flow).run()
    assert "root.sparse" in flow.waiter.outcome and "big.bin" in flow.waiter.outcome
    assert flow.waiter.outcome.startswith("OriginError")
    assert flow.waiter.seconds < 10
    assert time.monotonic() - start < 60


def test_a_slow_origin_times_out(monkeypatch):
    monkeypatch.setenv("CAS_RUNTIME_TIMEOUT", "1")
    flow = rt_apps.KillFlow(kill_after=None)
    App(flow).run()
    assert "did not answer" in flow.waiter.outcome and "root.sparse" in flow.waiter.outcome
    assert 0.9 < flow.waiter.seconds < 5


def test_get_in_the_flow_is_refused():
    flow = rt_apps.FlowSideGet()
    App(flow).run()
    assert "only works inside a running Work" in flow.error


def test_failure_exits_nonzero_with_one_message(launch_dir):
    (launch_dir / "failing.py").write_text(
        "from runtime import App, Flow\n"
        "import rt_apps\n"
        "class Root(Flow):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.producer = rt_apps.Producer()\n"
        "    def run(self):\n"
        "        self.producer.run(crash='raise')\n"
        "app = App(Root())\n"
    )
    # The app's folder holds the modules it imports (the Ray executor ships that folder).
    shutil.copy(rt_apps.__file__, launch_dir)
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "run", "failing.py"],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "work root.producer failed" in done.stderr and "training diverged" in done.stderr
    assert done.stderr.count("Traceback") == 1  # the work's own, not a second from the flow


def test_an_unavailable_executor_is_one_clear_line(launch_dir):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "run",
            os.path.join(REPO, "examples", "seed_train_deploy.py"),
            "--executor",
            "nonesuch",
        ],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "invalid choice: 'nonesuch'" in done.stderr
    env = dict(os.environ, CAS_EXECUTOR="nonesuch")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "run",
            os.path.join(REPO, "examples", "seed_train_deploy.py"),
        ],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1 and "unknown executor 'nonesuch'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_flow_never_imports_an_executor_it_does_not_use():
    code = (
        "import sys, runtime, runtime.app, runtime.runner, runtime.work;"
        "assert 'runtime.local' not in sys.modules and 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = "import sys, runtime.local; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_seed_deploy_init_example_keeps_the_trainers_origin(launch_dir):
    done = run_example("seed_deploy_init.py", launch_dir)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert "from root.train" in first and "from root.train" in second
    assert "= [[0, 1, 2, 3, 4], [0, 1, 2, 3, 5]]" in first
    assert "= [[0, 1, 2, 3, 4], [0, 1, 2, 3, 6]]" in second
    assert first.endswith("moved (files, bytes): [(2, 52)]")  # both checkpoints arrive
    assert second.endswith("moved (files, bytes): [(1, 26)]")  # only the retrained one
    works = launch_dir / ".runtime" / "root" / "works"
    deployed = works / "root.deploy" / "checkpoints"
    assert sorted(os.listdir(deployed)) == ["checkpoint_1.ckpt", "checkpoint_2.ckpt"]
    trained = works / "root.train" / "checkpoints" / "checkpoint_2.ckpt"
    assert (deployed / "checkpoint_2.ckpt").read_bytes() == trained.read_bytes()


def test_a_path_handed_through_two_inits_keeps_its_origin():
    flow = rt_apps.InitChainFlow()
    App(flow).run()
    assert flow.origins == ["root.producer", "root.producer"]
    assert flow.serving.deploy.seen == [
        ["root.producer", [], None],  # the origin has nothing yet: nothing moves, no error
        ["root.producer", [2], "v1"],
        ["root.producer", [1], "v2"],  # only the changed file moves
    ]
