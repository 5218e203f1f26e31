"""The runtime with real work processes: transfer, persistence, failures, timeouts."""

import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import rt_apps

from cas_storage import Store
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


# -- background works ------------------------------------------------------------


def test_a_server_gets_whole_checkpoints_from_a_trainer_rewriting_them_in_place():
    flow = rt_apps.TrainServeFlow(steps=25)
    App(flow).run()
    served = [step for pair in flow.server.served for step in pair if step is not None]
    assert -1 not in served, f"a torn checkpoint was served: {flow.server.served}"
    assert served == sorted(served), "steps went backwards"
    assert len(served) >= 4 and served[-1] == 25  # the last one is the final checkpoint
    assert len(set(served)) >= 2  # checkpoints arrived while the trainer trained
    # Reading `running` refreshed the flow's view: it saw the trainer progress.
    assert flow.progress == sorted(flow.progress) and flow.progress[-1] == 25
    assert len(set(flow.progress)) >= 3


def test_background_run_rules():
    flow = rt_apps.BackgroundRulesFlow()
    App(flow).run()
    seen = flow.seen
    assert seen["returned_running"] is True  # run() returned while the call goes on
    assert "root.train" in seen["twice"] and "still running" in seen["twice"]
    assert "root.train" in seen["timeout"]
    assert seen["after_wait"] == [False, 3]
    work, details = seen["failed"]
    assert work == "root.train" and "RuntimeError: diverged at step 5" in details
    assert seen["failed_step"] == 5  # attributes synced from the failed call
    # Persisted after the failed call: the stopped trainer's last checkpoint is served.
    assert flow.reader.served == [[5, 5]]


def test_the_app_waits_for_background_works_at_the_end(launch_dir):
    flow = rt_apps.LeaveRunningFlow()
    App(flow).run()
    assert flow.train.step == 4  # the call ran to its end after the flow returned
    assert not flow.train.running
    store = Store.open(launch_dir / ".cas", state=str(launch_dir / "state.db"))
    out = launch_dir / "check"
    store.checkout("root.train", "ckpt", out)
    assert (out / "model.bin").read_bytes() == bytes([4]) * rt_apps.MIB


# -- lifecycle --------------------------------------------------------------------


def test_reading_an_attribute_the_work_never_set_names_the_work():
    flow = rt_apps.NeverSetFlow()
    App(flow).run()
    assert "root.producer" in flow.error and "'accuracy'" in flow.error


def test_a_work_that_cannot_be_pickled_is_one_clear_error():
    with pytest.raises(WorkFailed) as caught:
        App(rt_apps.UnpicklableFlow()).run()
    assert caught.value.work == "root.holder"
    assert "could not start" in str(caught.value) and "'_lock'" in str(caught.value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone, only not yet reaped
        return stat.read().split(")")[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """Work processes started by ``pid`` (not multiprocessing's resource tracker, which
    leaves by itself once every process holding its pipe has gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().split(")")[-1].split()[1])
                with open(f"/proc/{entry}/cmdline") as cmdline:
                    helper = "resource_tracker" in cmdline.read()
            except OSError:
                continue
            if ppid == pid and not helper:
                found.append(int(entry))
    return found


def _launch_forever(cwd: pathlib.Path) -> subprocess.Popen:
    """``python -m runtime run`` of an app whose flow trains in the background forever."""
    (cwd / "forever.py").write_text(
        "from runtime import App\nimport rt_apps\napp = App(rt_apps.ForeverFlow())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(rt_apps.__file__)))
    return subprocess.Popen(
        [sys.executable, "-m", "runtime", "run", "forever.py"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_ctrl_c_stops_every_work_which_persists_and_exits_130(launch_dir, executor):
    launcher = _launch_forever(launch_dir)
    try:
        line = launcher.stdout.readline()
        assert line.startswith("pids "), line + launcher.stderr.read()
        trainer = int(line.split()[1])
        works = _children(launcher.pid) if executor == "local" else []
        if executor == "local":
            assert trainer in works and len(works) >= 2  # the trainer and the server
        launcher.send_signal(signal.SIGINT)  # to the launcher only, not its group
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, err
    assert "Traceback" not in err
    assert not [pid for pid in works if _alive(pid)], "a work process was left behind"
    store = Store.open(launch_dir / ".cas", state=str(launch_dir / "state.db"))
    latest = store.versions("root.train", "ckpt")[-1]
    out = launch_dir / "check"
    store.checkout("root.train", "ckpt", out, version=latest.number)
    data = (out / "model.bin").read_bytes()
    assert data == data[:1] * rt_apps.MIB and data[0] >= 2  # persisted, and whole


@pytest.mark.parametrize("executor", ["local"], indirect=True)
def test_ctrl_c_at_any_moment_of_the_flow_stops_every_work_and_exits_130(launch_dir, executor):
    """50 launches, 5 at a time, each interrupted at a random moment once it started its
    first work (in a work's start, a pipe read, a sync, a sleep): each exits 130, cleanly."""
    for batch in range(10):
        launchers = []
        for i in range(5):
            cwd = launch_dir / f"round{batch}-{i}"
            cwd.mkdir()
            launchers.append(_launch_forever(cwd))
        try:
            for launcher in launchers:  # the app runs once it starts its first work
                while not _children(launcher.pid) and launcher.poll() is None:
                    time.sleep(0.01)
            for launcher in launchers:
                # Anywhere from a work's start to the flow's 50 ms polling loop.
                time.sleep(random.uniform(0, 0.3))
                launcher.send_signal(signal.SIGINT)
            works = [pid for launcher in launchers for pid in _children(launcher.pid)]
            errors = [launcher.communicate(timeout=60)[1] for launcher in launchers]
        finally:
            for launcher in launchers:
                if launcher.poll() is None:
                    launcher.kill()
        for launcher, err in zip(launchers, errors, strict=True):
            assert launcher.returncode == 130, err
            assert "Traceback" not in err, err
        assert not [pid for pid in works if _alive(pid)], "a work process was left behind"


def test_the_demo_serves_each_new_checkpoint_moving_only_changed_layers(launch_dir):
    done = run_example("share_checkpoint.py", launch_dir)
    assert done.returncode == 0, done.stderr
    served = [line for line in done.stdout.splitlines() if "server: now serving" in line]
    assert len(served) >= 2
    assert "moved 9 files, 16.0 MiB of 16.0 MiB" in served[0]  # the first fetch is whole
    for line in served[1:]:  # afterwards only the rewritten layers (and meta.json) move
        assert "16.0 MiB of" not in line and "of 16.0 MiB" in line
    assert "now serving step 30" in served[-1]
    log = done.stdout.split("$ cas log root.train checkpoints/latest")[1]
    # every served checkpoint is a recorded version; a poll may skip one saved moments later
    assert 2 <= len(served) <= len([line for line in log.splitlines() if "16.0 MiB" in line])
