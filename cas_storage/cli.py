"""The ``cas`` command: parse arguments, call ``Store``, format the answer.

No storage logic lives here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .errors import CasError
from .store import Store, default_url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cas", description="Inspect and use a cas_storage store.")
    parser.add_argument(
        "--store", default=None, help="store folder (default: $CAS_STORE or ./.cas)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)

    put = commands.add_parser(
        "put",
        help="snapshot a local file or folder as the next version of (WORK, PATH)",
        epilog="example: cas put root.train outputs/ckpt ./outputs/ckpt",
    )
    put.add_argument("work")
    put.add_argument("path")
    put.add_argument("src")

    get = commands.add_parser(
        "get",
        help="materialize a version into a local folder",
        epilog="example: cas get root.train outputs/ckpt ./restored --version 2",
    )
    get.add_argument("work")
    get.add_argument("path")
    get.add_argument("dest")
    get.add_argument("--version", type=int, default=None)
    get.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "put":
            store = Store.open(args.store or default_url())
            version = store.snapshot(args.work, args.path, args.src)
            _emit(
                args,
                version.to_json(),
                f"{args.work}:{args.path} version {version.number} "
                f"({version.files} files, {version.bytes} bytes)",
            )
        elif args.command == "get":
            store = Store.open(args.store or default_url(), create=False)
            r = store.checkout(args.work, args.path, args.dest, args.version, args.overwrite)
            _emit(
                args,
                dataclasses.asdict(r),
                f"version {r.version}: {r.files_transferred} files, "
                f"{r.bytes_transferred} bytes transferred",
            )
    except (CasError, OSError, ValueError, LookupError) as exc:
        print(f"cas: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _emit(args: argparse.Namespace, data: dict, human: str) -> None:
    print(json.dumps(data) if args.json else human)


if __name__ == "__main__":
    sys.exit(main())
