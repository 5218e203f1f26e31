"""Start-up: a command on a local store loads none of the slow optional modules.

Each check runs in a fresh interpreter, since this test process has long since
imported everything. Behaviour, not timing: the benchmark measures the time.
"""

from __future__ import annotations

import json
import pathlib
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


#: Not needed to parse arguments: `cas --help` and usage errors load none of these.
STORE_MODULES = (
    "cas_storage.store",
    "cas_storage.catalog",
    "cas_storage.checkout",
    "cas_storage.snapshot",
    "cas_storage.objects",
    "sqlite3",
    "xxhash",
    "rich",
    "pyfastcdc",
    "dataclasses",
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


def matching(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m in names or m.split(".")[0] in names}


def test_help_and_usage_errors_load_nothing_of_the_store() -> None:
    for argv in (["--help"], ["put", "--help"], ["no-such-command"], []):
        code = (
            "import contextlib, io\n"
            "from cas_storage.cli import main\n"
            # Text sinks, not None: argparse on Python 3.10 writes to None and fails.
            "with contextlib.redirect_stdout(io.StringIO()), "
            "contextlib.redirect_stderr(io.StringIO()):\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit:\n"
            "        pass\n"
        )
        assert matching(loaded_after(code), STORE_MODULES) == set(), argv


def test_the_package_names_load_on_first_use_only() -> None:
    assert matching(loaded_after("import cas_storage"), STORE_MODULES) == set()
    modules = loaded_after(
        "from cas_storage import Store, Version, Manifest, CasError\n"
        "assert Store.__module__ == 'cas_storage.store' and Version.__name__ == 'Version'"
    )
    assert {"cas_storage.store", "cas_storage.catalog", "sqlite3"} <= modules


def _cli_session(tmp_path: pathlib.Path, *commands: str) -> set[str]:
    """Modules loaded by ``cas put`` of a one-file folder, ``commands``, then ``cas get``."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    store, state, out = tmp_path / ".cas", tmp_path / "state.db", tmp_path / "out"
    middle = "".join(f"assert main(args + [{c!r}]) == 0\n" for c in commands)
    code = (
        "import os\n"
        f"os.environ['CAS_STATE'] = {str(state)!r}\n"
        "from cas_storage.cli import main\n"
        f"args = ['--store', {str(store)!r}, '--quiet']\n"
        f"assert main(args + ['put', 'w', 'p', {str(src)!r}]) == 0\n"
        f"{middle}"
        f"assert main(args + ['get', 'w', 'p', {str(out)!r}]) == 0\n"
    )
    modules = loaded_after(code)
    assert (out / "a.txt").read_text() == "hello"
    return modules


def test_put_and_get_without_a_table_or_big_files_load_no_rich_or_chunker(tmp_path) -> None:
    assert matching(_cli_session(tmp_path), ("rich", "pyfastcdc")) == set()


def test_put_ls_and_get_on_a_local_store_load_no_heavy_module(tmp_path) -> None:
    assert heavy(_cli_session(tmp_path, "ls")) == set()


def test_a_remote_store_and_the_package_names_still_load_on_use() -> None:
    modules = loaded_after(
        "import cas_storage\n"
        "cas_storage.Store.open('memory://startup-test')\n"
        "assert cas_storage.Drive.__name__ == 'Drive' and cas_storage.Path.__name__ == 'Path'"
    )
    assert {"fsspec", "cas_storage.drive", "cas_storage.path"} <= modules
