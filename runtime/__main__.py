"""``python -m runtime run app.py``: load the file, find its ``App``, run it."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys

from .app import App
from .executor import EXECUTORS, ExecutorUnavailable, StartFailed, UnknownExecutor
from .work import WorkFailed


def load_app(filename: str) -> App:
    """Import ``filename`` as a module (so work processes can import it too); find its App."""
    path = os.path.abspath(filename)
    if not os.path.isfile(path):
        raise SystemExit(f"runtime: error: no such file {filename}")
    folder, module_name = os.path.split(path)
    module_name = os.path.splitext(module_name)[0]
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"runtime: error: cannot load {filename} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    apps = [value for value in vars(module).values() if isinstance(value, App)]
    if not apps:
        raise SystemExit(f"runtime: error: {filename} defines no App (write app = App(Root()))")
    return apps[0]


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C must reach the app even when the launcher inherited an ignored SIGINT
    # (Python keeps an inherited SIG_IGN): the app turns it into an orderly stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="python -m runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the App defined in a Python file")
    run.add_argument("file", help="e.g. app.py, defining app = App(Root())")
    run.add_argument(
        "--executor",
        choices=sorted(EXECUTORS),
        help="where works run (default: App(executor=...), else $CAS_EXECUTOR, else local)",
    )
    args = parser.parse_args(argv)
    app = load_app(args.file)
    if args.executor:
        app.executor = args.executor
    try:
        app.run()
    except WorkFailed as failure:
        print(failure, file=sys.stderr)
        return 1
    except (ExecutorUnavailable, StartFailed, UnknownExecutor) as refused:
        print(f"runtime: error: {refused}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("runtime: interrupted; every work stopped and persisted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
