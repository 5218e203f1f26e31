"""Start-up: a command on a local store loads none of the slow optional modules.

Each check runs in a fresh interpreter, since this test process has long since
imported everything. Behaviour, not timing: the benchmark measures the time.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "fsspec",
    "sqlite_utils",
    "dulwich",
    "asyncio",  # via the fsspec helpers (remote.py)
    "logging",  # via concurrent.futures
    "cas_storage.drive",
    "cas_storage.gitexport",
    "cas_storage.remote",
)


def loaded_after(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY}


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert heavy(loaded_after("import cas_storage.cli")) == set()


def test_put_ls_and_get_on_a_local_store_load_no_heavy_module(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    store, state, out = tmp_path / ".cas", tmp_path / "state.db", tmp_path / "out"
    code = (
        "import os\n"
        f"os.environ['CAS_STATE'] = {str(state)!r}\n"
        "from cas_storage.cli import main\n"
        f"args = ['--store', {str(store)!r}, '--quiet']\n"
        f"assert main(args + ['put', 'w', 'p', {str(src)!r}]) == 0\n"
        "assert main(args + ['ls']) == 0\n"
        f"assert main(args + ['get', 'w', 'p', {str(out)!r}]) == 0\n"
    )
    assert heavy(loaded_after(code)) == set()
    assert (out / "a.txt").read_text() == "hello"


def test_a_remote_store_and_the_package_names_still_load_on_use() -> None:
    modules = loaded_after(
        "import cas_storage\n"
        "cas_storage.Store.open('memory://startup-test')\n"
        "assert cas_storage.Drive.__name__ == 'Drive' and cas_storage.Path.__name__ == 'Path'"
    )
    assert {"fsspec", "cas_storage.drive", "cas_storage.path"} <= modules
