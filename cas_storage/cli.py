"""The ``cas`` command: parse arguments, call ``Store``, format the answer.

No storage logic lives here. Errors print one line on stderr and exit 1
(argparse's usage errors exit 2); ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

from .catalog import Version
from .errors import CasError
from .keys import split_drive_work
from .manifest import diff
from .progress import Progress, TerminalProgress
from .store import Store, default_url


def _version_arg(text: str) -> int | str:
    """A version number, or a unique prefix of a version's manifest digest."""
    return int(text) if text.isdigit() else text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas",
        description="Inspect and use a cas_storage store.",
        epilog="example: cas --store ./.cas ls",
    )
    parser.add_argument("--store", default=None, help="store folder or URL ($CAS_STORE, ./.cas)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line on put/get")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, epilog=f"example: {example}")

    ls = command(
        "ls", "list works (and drives), their stored paths and versions", "cas ls root.train"
    )
    ls.add_argument("work", nargs="?")
    ls.add_argument("path", nargs="?")

    log = command("log", "versions of one path, newest first", "cas log root.train outputs/ckpt")
    log.add_argument("work")
    log.add_argument("path")

    for name, help, example in (
        (
            "show",
            "the manifest of a version: files, sizes, digests",
            "cas show root.train outputs/ckpt --version 2",
        ),
        (
            "cat",
            "one file's bytes from a version, to stdout",
            "cas cat root.train outputs/ckpt model.pt > model.pt",
        ),
    ):
        sub = command(name, help, example)
        sub.add_argument("work")
        sub.add_argument("path")
        if name == "cat":
            sub.add_argument(
                "file", help="path of the file inside the stored folder ('.' for a file)"
            )
        sub.add_argument(
            "--version",
            type=_version_arg,
            default=None,
            help="version number or manifest digest prefix (default: latest)",
        )

    d = command(
        "diff",
        "files added, removed and changed between two versions",
        "cas diff root.train outputs/ckpt 1 2",
    )
    d.add_argument("work")
    d.add_argument("path")
    d.add_argument("v1", type=_version_arg)
    d.add_argument("v2", type=_version_arg)

    put = command(
        "put",
        "snapshot a local file or folder as the next version of (WORK, PATH)",
        "cas put root.train outputs/ckpt ./outputs/ckpt",
    )
    put.add_argument("work")
    put.add_argument("path")
    put.add_argument("src")

    get = command(
        "get",
        "materialize a version into a local folder",
        "cas get root.train outputs/ckpt ./restored --version 2",
    )
    get.add_argument("work")
    get.add_argument("path")
    get.add_argument("dest")
    get.add_argument("--version", type=_version_arg, default=None)
    get.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")

    command(
        "stats", "logical bytes, stored bytes, dedup ratio, object and version counts", "cas stats"
    )

    verify = command(
        "verify", "re-hash objects and check every version's references", "cas verify --sample 1000"
    )
    verify.add_argument("--sample", type=int, default=None, help="re-hash only N random objects")

    gc = command(
        "gc",
        "drop old versions by policy, then unreferenced objects",
        "cas gc --keep-last 3 --dry-run",
    )
    gc.add_argument("--keep-last", type=int, default=None, help="versions to keep per path")
    gc.add_argument("--dry-run", action="store_true", help="report, change nothing")
    gc.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        help="keep unreferenced objects younger than this many seconds",
    )

    export = command(
        "export-git",
        "write version history as git commits (refs/cas/...)",
        "cas export-git ./history root.train",
    )
    export.add_argument("repo")
    export.add_argument("work", nargs="?")
    export.add_argument("path", nargs="?")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        store = Store.open(args.store or default_url(), create=args.command == "put")
        HANDLERS[args.command](store, args)
    except BrokenPipeError:  # the reader went away (`cas show ... | head`): not an error
        sys.stderr.close()
        return 0
    except (CasError, OSError, ValueError, LookupError) as exc:
        print(f"cas: error: {exc}", file=sys.stderr)
        return 1
    return 0 if not getattr(args, "failed", False) else 1


# -- one function per command: call the store, then print --------------------------
def _ls(store: Store, args: argparse.Namespace) -> None:
    works = [args.work] if args.work else store.works()
    rows = []
    for work in works:
        paths = [args.path] if args.path else store.paths(work)
        if args.work and not paths:
            raise LookupError(f"unknown work {work!r}")
        for path in paths:
            versions = store.versions(work, path)
            if not versions:
                raise LookupError(f"{work}:{path} has no stored versions")
            kind, owner = "path", work
            drive = split_drive_work(work)
            if drive is not None:
                kind, owner = f"drive {drive[0]}", drive[1]
            rows.append(
                {
                    "work": work,
                    "path": path,
                    "versions": len(versions),
                    "latest": versions[-1].number,
                    "bytes": versions[-1].bytes,
                    "kind": kind,
                    "owner": owner,
                }
            )
    _print(args, rows, ["kind", "owner", "path", "versions", "latest", "bytes"])


def _log(store: Store, args: argparse.Namespace) -> None:
    versions = list(reversed(store.versions(args.work, args.path)))
    if not versions:
        raise FileNotFoundError(f"{args.work}:{args.path} has no stored versions")
    _print(
        args, [v.to_json() for v in versions], ["version", "created", "files", "bytes", "manifest"]
    )


def _find(store: Store, work: str, path: str, ref: int | str | None) -> Version:
    if ref is None or isinstance(ref, int):
        return store.version(work, path, ref)
    return store.find_version(work, path, ref)


def _show(store: Store, args: argparse.Namespace) -> None:
    v = _find(store, args.work, args.path, args.version)
    entries = [e.to_json() for e in store.manifest(v).entries]
    if args.json:
        print(json.dumps({**v.to_json(), "entries": entries}))
        return
    print(
        f"{v.work}:{v.path} version {v.number}  manifest {v.manifest}  "
        f"{v.files} files  {v.bytes} bytes"
    )
    rows = [
        {
            **e,
            "mode": f"{e['mode']:o}",
            "size": e.get("size", ""),
            "digest": e.get("digest", e.get("target", "")),
            "chunks": len(e.get("chunks", ())) or "",
        }
        for e in entries
    ]
    _table(rows, ["type", "mode", "size", "chunks", "digest", "path"])


def _cat(store: Store, args: argparse.Namespace) -> None:
    v = _find(store, args.work, args.path, args.version)
    out = sys.stdout.buffer
    try:
        for piece in store.read(v, args.file):
            out.write(piece)
    except IsADirectoryError as exc:
        raise IsADirectoryError(f"{exc}; use cas get") from None
    out.flush()


def _diff(store: Store, args: argparse.Namespace) -> None:
    a = _find(store, args.work, args.path, args.v1)
    b = _find(store, args.work, args.path, args.v2)
    changes = diff(store.manifest(a), store.manifest(b))
    if args.json:
        print(json.dumps(dataclasses.asdict(changes)))
        return
    for mark, paths in (("+", changes.added), ("-", changes.removed), ("M", changes.changed)):
        for path in paths:
            print(f"{mark} {path}")


def _progress(args: argparse.Namespace, verb: str) -> Progress:
    return Progress() if args.quiet or args.json else TerminalProgress(verb)


def _put(store: Store, args: argparse.Namespace) -> None:
    bar = _progress(args, "put")
    try:
        v = store.snapshot(args.work, args.path, args.src, progress=bar)
    finally:
        bar.done()
    _say(
        args,
        v.to_json(),
        f"{v.work}:{v.path} version {v.number} ({v.files} files, {v.bytes} bytes)",
    )


def _get(store: Store, args: argparse.Namespace) -> None:
    number = _find(store, args.work, args.path, args.version).number
    bar = _progress(args, "get")
    try:
        r = store.checkout(args.work, args.path, args.dest, number, args.overwrite, progress=bar)
    finally:
        bar.done()
    _say(
        args,
        dataclasses.asdict(r),
        f"version {r.version}: {r.files_transferred} files, "
        f"{r.bytes_transferred} bytes transferred",
    )


def _stats(store: Store, args: argparse.Namespace) -> None:
    s = store.stats()
    if args.json:
        print(json.dumps(s.to_json()))
        return
    rows = [
        {
            "scope": "store",
            "versions": s.versions,
            "logical_bytes": s.logical_bytes,
            "stored_bytes": s.stored_bytes,
            "objects": s.objects,
            "dedup_ratio": f"{s.dedup_ratio:.2f}",
        }
    ]
    rows += [
        {
            "scope": name,
            "versions": w.versions,
            "logical_bytes": w.logical_bytes,
            "stored_bytes": "",
            "objects": "",
            "dedup_ratio": "",
        }
        for name, w in sorted(s.works.items())
    ]
    _table(rows, ["scope", "versions", "logical_bytes", "stored_bytes", "objects", "dedup_ratio"])


def _verify(store: Store, args: argparse.Namespace) -> None:
    problems = store.verify(args.sample)
    args.failed = bool(problems)
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in problems]))
    elif problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
    else:
        print("store is sound")


def _gc(store: Store, args: argparse.Namespace) -> None:
    r = store.gc(args.keep_last, args.dry_run, args.grace)
    verb = "would free" if r.dry_run else "freed"
    _say(
        args,
        r.to_json(),
        f"{verb} {len(r.versions_dropped)} versions, {r.objects_deleted} "
        f"objects, {r.bytes_freed} bytes",
    )


def _export(store: Store, args: argparse.Namespace) -> None:
    added = store.export_git(args.repo, args.work, args.path)
    lines = [f"{key}: {n} new commits" for key, n in added.items()]
    _say(args, added, "\n".join(lines) or "nothing to export")


HANDLERS: dict[str, Callable[[Store, argparse.Namespace], None]] = {
    "ls": _ls,
    "log": _log,
    "show": _show,
    "cat": _cat,
    "diff": _diff,
    "put": _put,
    "get": _get,
    "stats": _stats,
    "verify": _verify,
    "gc": _gc,
    "export-git": _export,
}


# -- output -----------------------------------------------------------------------
def _say(args: argparse.Namespace, data: object, human: str) -> None:
    print(json.dumps(data) if args.json else human)


def _print(args: argparse.Namespace, rows: list[dict], columns: list[str]) -> None:
    if args.json:
        print(json.dumps(rows))
    else:
        _table(rows, columns)


def _table(rows: list[dict], columns: list[str]) -> None:
    """Aligned columns; numbers right-aligned."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), int) for row in rows) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print(
            "  ".join(
                v.rjust(w) if n else v.ljust(w) for v, w, n in zip(r, widths, numeric, strict=True)
            ).rstrip()
        )


if __name__ == "__main__":
    sys.exit(main())
