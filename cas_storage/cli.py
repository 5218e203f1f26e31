"""The ``cas`` command: parse arguments, call ``Store``, format the answer.

No storage logic lives here. Errors print one line on stderr and exit 1; usage
errors (a bad option value included) exit 2. ``--json`` prints exact,
machine-readable output; human output uses readable sizes and aligned plain-text
tables (rich is imported only when a progress bar is actually drawn, so start-up
stays fast).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import CasError, not_found
from .keys import split_drive_work
from .progress import Progress, TerminalProgress
from .units import human_size

if TYPE_CHECKING:  # imported in main(): `cas --help` never loads the store
    from .catalog import Version
    from .store import Store

#: Seconds of gc grace by default (one hour), as in ``cas_storage.gc``.
DEFAULT_GRACE = 3600.0


# -- argument types: a bad value is a usage error (exit 2) naming the flag ----------
def _version_arg(text: str) -> int | str:
    """A version number, or a unique prefix of a version's manifest digest."""
    if text.isdigit():
        return int(text)
    if text and all(c in "0123456789abcdef" for c in text.lower()):
        return text.lower()
    raise argparse.ArgumentTypeError(f"{text!r} is not a version number or digest prefix")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, not {text!r}")
    return int(text)


def _store_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, not {text!r}")
    flags = {"true": True, "false": False}
    return key, flags.get(value.lower(), value)


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """``--store``, ``--json``, ``--quiet``: accepted before and after the command.

    The copies on each command default to "not given", so a value given before
    the command is not reset by the command's own parser.
    """
    keep: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store folder or fsspec URL (default: $CAS_STORE, else ./.cas)",
        **keep,
    )
    parser.add_argument(
        "--store-option",
        metavar="KEY=VALUE",
        action="append",
        type=_store_option,
        help="an fsspec storage option for a URL store, repeatable "
        "(endpoint_url=..., profile=..., anon=true)",
        **keep,
    )
    parser.add_argument(
        "--json", action="store_true", help="machine-readable output, exact bytes", **keep
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar", **keep)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas",
        description="Inspect and use a cas_storage store.",
        epilog="example: cas --store ./.cas ls",
    )
    _global_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"cas {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, example: str, more: str = "") -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help + (f". {more}" if more else ""),
            epilog=f"example: {example}",
        )
        _global_options(sub, defaults=False)
        return sub

    def version_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--version",
            type=_version_arg,
            default=None,
            help="version number or manifest digest prefix (default: latest)",
        )

    ls = command(
        "ls", "list works (and drives), their stored paths and versions", "cas ls root.train"
    )
    ls.add_argument("work", nargs="?")
    ls.add_argument("path", nargs="?")

    log = command("log", "versions of one path, newest first", "cas log root.train ckpt -n 5")
    log.add_argument("work")
    log.add_argument("path")
    log.add_argument(
        "-n", "--max-count", type=_positive_int, default=None, help="show only the newest N"
    )

    show = command(
        "show",
        "the manifest of a version: files, sizes, digests",
        "cas show root.train outputs/ckpt --version 2",
    )
    show.add_argument("work")
    show.add_argument("path")
    version_option(show)

    cat = command(
        "cat",
        "one file's bytes from a version, to stdout",
        "cas cat root.train outputs/ckpt model.pt > model.pt",
    )
    cat.add_argument("work")
    cat.add_argument("path")
    cat.add_argument("file", help="path of the file inside the stored folder ('.' for a file)")
    version_option(cat)

    d = command(
        "diff",
        "files added, removed and changed between two versions",
        "cas diff root.train outputs/ckpt 1 2",
    )
    d.add_argument("work")
    d.add_argument("path")
    d.add_argument("v1", type=_version_arg)
    d.add_argument("v2", type=_version_arg)

    status = command(
        "status",
        "what differs between a local file or folder and the latest version",
        "cas status root.train outputs/ckpt ./outputs/ckpt",
        "Only files the stat cache cannot vouch for are read; nothing is stored",
    )
    status.add_argument("work")
    status.add_argument("path")
    status.add_argument("src")
    version_option(status)

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
        "With --overwrite, DEST is made to mirror the version: files in DEST that "
        "the version does not have are removed",
    )
    get.add_argument("work")
    get.add_argument("path")
    get.add_argument("dest")
    version_option(get)
    get.add_argument(
        "--overwrite",
        action="store_true",
        help="update an existing DEST to mirror the version (files not in it are removed)",
    )
    get.add_argument(
        "--replace-type",
        action="store_true",
        help="with --overwrite, also replace a DEST file by a folder (or a folder by a file)",
    )

    command(
        "stats", "logical bytes, stored bytes, dedup ratio, object and version counts", "cas stats"
    )

    verify = command(
        "verify", "re-hash objects and check every version's references", "cas verify --sample 1000"
    )
    verify.add_argument(
        "--sample", type=_positive_int, default=None, help="re-hash only N random objects"
    )

    gc = command(
        "gc",
        "drop old versions by policy, then unreferenced objects",
        "cas gc --keep-last 3 --dry-run",
    )
    gc.add_argument(
        "--keep-last", type=_positive_int, default=None, help="versions to keep per path (>= 1)"
    )
    gc.add_argument("--dry-run", action="store_true", help="report, change nothing")
    gc.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        help="keep unreferenced objects younger than this many seconds (default: 3600)",
    )

    serve = command(
        "serve",
        "a read-only web view of the store: works, versions, files, diffs, dedup charts",
        "cas serve --port 8000",
        "Binds 127.0.0.1 unless --host says otherwise; never writes to the store",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port to listen on; 0 picks a free one"
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


#: Commands that may create a missing store; every other one only reads.
CREATING = {"put"}
#: Commands that only read the store: it is opened read-only (works on a read-only store).
READING = {"ls", "log", "show", "cat", "diff", "status", "stats", "verify", "serve", "export-git"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cas`` command; ``argv`` defaults to the process's own arguments.

    Called without ``argv`` (the ``cas`` program), the process only exits
    afterwards: its objects are frozen out of the garbage collector first, so
    that Python's exit does not walk everything the S3 client built (0.2 s
    after an S3 command, 0.03 s frozen). Callers passing ``argv`` keep a normal
    collector.
    """
    code = _main(argv)
    if argv is None:
        import gc

        gc.freeze()
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from .store import Store, default_url  # after parsing: --help and usage errors skip it

    try:
        store = Store.open(
            args.store or default_url(),
            create=args.command in CREATING,
            storage_options=dict(getattr(args, "store_option", None) or []),
            readonly=args.command in READING,
        )
        HANDLERS[args.command](store, args)
    except BrokenPipeError:  # the reader went away (`cas show ... | head`): not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("cas: interrupted", file=sys.stderr)
        return 130
    except (CasError, OSError, ValueError, LookupError) as exc:
        print(f"cas: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0 if not getattr(args, "failed", False) else 1


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


# -- one function per command: call the store, then print --------------------------
def _ls(store: Store, args: argparse.Namespace) -> None:
    works = [args.work] if args.work else store.works()
    rows = []
    for work in works:
        paths = [args.path] if args.path else store.paths(work)
        if args.work and not paths:
            raise LookupError(not_found(f"work {work}"))
        for path in paths:
            versions = store.versions(work, path)
            if not versions:
                raise FileNotFoundError(not_found(f"{work}:{path}", hint="no stored versions"))
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
    versions = list(reversed(store.versions(args.work, args.path, newest=args.max_count)))
    if not versions:
        raise FileNotFoundError(not_found(f"{args.work}:{args.path}", hint="no stored versions"))
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
    print(f"{v.label()}  manifest {v.manifest}  {v.files} files  {human_size(v.bytes)}")
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


def _print_changes(args: argparse.Namespace, data: dict[str, Any], summary: str) -> None:
    if args.json:
        print(json.dumps(data))
        return
    for mark, key in (("+", "added"), ("-", "removed"), ("M", "changed")):
        for path in data[key]:
            print(f"{mark} {path}")
    if summary:
        print(summary, file=sys.stderr)


def _diff(store: Store, args: argparse.Namespace) -> None:
    a = _find(store, args.work, args.path, args.v1)
    b = _find(store, args.work, args.path, args.v2)
    from .manifest import diff

    _print_changes(args, _as_dict(diff(store.manifest(a), store.manifest(b))), "")


def _status(store: Store, args: argparse.Namespace) -> None:
    v = _find(store, args.work, args.path, args.version)
    report = store.status(args.work, args.path, args.src, v.number)
    data = {
        "version": v.number,
        **_as_dict(report.diff),
        "files_read": report.files_read,
        "bytes_read": report.bytes_read,
    }
    same = "" if report.diff else f"{args.src} matches {v.label()}"
    _print_changes(args, data, same)


def _progress(args: argparse.Namespace, verb: str, unit: str = "items") -> Progress:
    return Progress() if args.quiet or args.json else TerminalProgress(verb, unit=unit)


def _put(store: Store, args: argparse.Namespace) -> None:
    bar = _progress(args, "put")
    try:
        v = store.snapshot(args.work, args.path, args.src, progress=bar)
    finally:
        bar.done()
    _say(
        args,
        v.to_json(),
        f"{v.label()} ({v.files} files, {human_size(v.bytes)})",
    )


def _get(store: Store, args: argparse.Namespace) -> None:
    v = _find(store, args.work, args.path, args.version)
    dest = os.path.abspath(args.dest)
    if os.path.lexists(dest):
        if not args.overwrite:
            raise FileExistsError(
                f"{args.dest} exists; pass --overwrite to make it mirror the version "
                "(files not in the version are removed)"
            )
        _check_type(store, v, args)
    bar = _progress(args, "get")
    try:
        r = store.checkout(args.work, args.path, dest, v.number, args.overwrite, progress=bar)
    finally:
        bar.done()
    _say(
        args,
        _as_dict(r),
        f"version {r.version}: {r.files_transferred} files, "
        f"{human_size(r.bytes_transferred)} transferred",
    )


def _check_type(store: Store, v: Version, args: argparse.Namespace) -> None:
    """Refuse to turn a file into a folder (or back) unless ``--replace-type`` says so."""
    wanted = "folder" if store.kind(v) == "dir" else "file"
    have = "folder" if os.path.isdir(args.dest) and not os.path.islink(args.dest) else "file"
    if have != wanted and not args.replace_type:
        raise IsADirectoryError(
            f"{args.dest} is a {have} but {v.label()} is a {wanted}; "
            "pass --replace-type as well to replace it"
        )


def _stats(store: Store, args: argparse.Namespace) -> None:
    s = store.stats()
    if args.json:
        print(json.dumps(s.to_json()))
        return
    rows: list[dict[str, Any]] = [
        {
            "scope": "store",
            "versions": s.versions,
            "logical": human_size(s.logical_bytes),
            "stored": human_size(s.stored_bytes),
            "objects": s.objects,
            "dedup_ratio": f"{s.dedup_ratio:.2f}",
        }
    ]
    rows += [
        {"scope": name, "versions": w.versions, "logical": human_size(w.logical_bytes)}
        for name, w in sorted(s.works.items())
    ]
    _table(rows, ["scope", "versions", "logical", "stored", "objects", "dedup_ratio"])


def _verify(store: Store, args: argparse.Namespace) -> None:
    bar = _progress(args, "verify", "objects")
    try:
        problems = store.verify(args.sample, progress=bar)
    finally:
        bar.done()
    args.failed = bool(problems)
    if args.json:
        print(json.dumps([_as_dict(p) for p in problems]))
    elif problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
    else:
        print("store is sound")


def _gc(store: Store, args: argparse.Namespace) -> None:
    bar = _progress(args, "gc", "objects")
    try:
        r = store.gc(args.keep_last, args.dry_run, args.grace, progress=bar)
    finally:
        bar.done()
    verb = "would free" if r.dry_run else "freed"
    human = (
        f"{verb} {len(r.versions_dropped)} versions, {r.objects_deleted} "
        f"objects, {human_size(r.bytes_freed)}"
    )
    if r.objects_held:
        human += (
            f"\n{r.objects_held} unreferenced objects ({human_size(r.bytes_held)}) are kept: "
            f"younger than the grace period (--grace {args.grace:g} seconds)"
        )
    _say(args, r.to_json(), human)


def _export(store: Store, args: argparse.Namespace) -> None:
    bar = _progress(args, "export-git", "versions")
    try:
        added = store.export_git(args.repo, args.work, args.path, progress=bar)
    finally:
        bar.done()
    lines = [f"{key}: {n} new commits" for key, n in added.items()]
    _say(args, added, "\n".join(lines) or "nothing to export")


def _serve(store: Store, args: argparse.Namespace) -> None:
    try:
        from .serve import serve
    except ImportError as exc:
        raise CasError(
            f"cas serve needs the serve extra ({exc}): pip install 'cas_storage[serve]'"
        ) from None
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a server is stopped
        serve(store, args.host, args.port)


HANDLERS: dict[str, Callable[[Store, argparse.Namespace], None]] = {
    "ls": _ls,
    "log": _log,
    "show": _show,
    "cat": _cat,
    "diff": _diff,
    "status": _status,
    "put": _put,
    "get": _get,
    "stats": _stats,
    "verify": _verify,
    "gc": _gc,
    "export-git": _export,
    "serve": _serve,
}


# -- output -----------------------------------------------------------------------
#: Columns that hold byte counts: exact in --json, human-readable in tables.
SIZE_COLUMNS = {"bytes", "size"}


def _as_dict(record: Any) -> dict[str, Any]:
    import dataclasses  # here, not at the top: `cas --help` has no use for it

    return dataclasses.asdict(record)


def _say(args: argparse.Namespace, data: object, human: str) -> None:
    print(json.dumps(data) if args.json else human)


def _print(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str]) -> None:
    if args.json:
        print(json.dumps(rows))
    else:
        _table(rows, columns)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """An aligned table on stdout: sizes human-readable, numbers right-aligned.

    Plain text, two spaces between columns, the header bold on a terminal (rich
    took 0.5 s to lay out ``cas log`` of 1,000 versions). Lines are never wrapped
    or cut, so ``cas log ... | grep`` sees whole lines.
    """
    right = []
    for c in columns:
        present = [r[c] for r in rows if r.get(c, "") != ""]
        right.append(c in SIZE_COLUMNS or all(isinstance(v, int) for v in present))
    grid = [[c.upper() for c in columns]]
    grid += [[_cell(c, row.get(c, "")) for c in columns] for row in rows]
    widths = [max(_width(line[i]) for line in grid) for i in range(len(columns))]
    lines = [
        "  ".join(_pad(text, w, r) for text, w, r in zip(line, widths, right, strict=True)).rstrip()
        for line in grid
    ]
    if sys.stdout.isatty():
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
    print("\n".join(lines))


def _cell(column: str, value: object) -> str:
    if column in SIZE_COLUMNS and isinstance(value, int):
        return human_size(value)
    text = str(value)
    if text.isprintable():
        return text
    # A control character in a name (an escape, a tab) is shown, never sent to the terminal.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _width(text: str) -> int:
    """Terminal cells ``text`` takes: wide (CJK) characters two, combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


if __name__ == "__main__":
    sys.exit(main())
