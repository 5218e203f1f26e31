"""The Flask application behind ``cas serve``: routes, and what each page shows.

Works and paths travel in query strings (``?work=...&path=...``): work names
may hold ``/`` and ``:`` (``drive:shared/root.a``), which a path segment would
make ambiguous.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from flask import Flask, Response, abort, render_template, request
from werkzeug.serving import make_server

from ..catalog import Version
from ..errors import CasError, MissingObject
from ..keys import split_drive_work
from ..manifest import DIR, FILE, Entry, Manifest, diff
from ..stats import PathHistory, VersionUsage
from ..store import Store
from ..units import human_size

#: Versions listed per page of a path (the chart always shows them all).
PAGE_SIZE = 100
#: Paths whose history (usage and changes per version) is kept computed.
HISTORY_CACHE = 32


class Histories:
    """Each path's history (usage and changes per version), kept and extended.

    Versions are only appended, and manifests are immutable: a path seen before
    only reads the manifests of versions recorded since. When versions were
    dropped (gc), its history is computed afresh.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache: OrderedDict[tuple[str, str], tuple[list[Version], PathHistory]]
        self.cache = OrderedDict()
        self.lock = threading.Lock()

    def rows(self, work: str, path: str, versions: list[Version]) -> list[VersionUsage]:
        with self.lock:  # one history per path, extended by one request at a time
            seen, history = self.cache.pop((work, path), ([], PathHistory()))
            if versions[: len(seen)] != seen:
                history = PathHistory()  # versions were dropped: start again
            self.store.extend_history(history, versions)
            self.cache[(work, path)] = (versions, history)
            while len(self.cache) > HISTORY_CACHE:
                self.cache.popitem(last=False)
            return history.versions[: len(versions)]

    def warm(self) -> None:
        """Compute every path's history (done once when the server starts)."""
        for work in self.store.works():
            for path in self.store.paths(work):
                self.rows(work, path, self.store.versions(work, path))


def create_app(store: Store) -> Flask:
    """The web view of ``store``. It only reads: no route writes to the store."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 0  # no request bodies: nothing is uploaded
    histories = app.extensions["cas_histories"] = Histories(store)
    app.jinja_env.filters["size"] = human_size
    app.jinja_env.globals["label"] = _label

    def version_of(work: str, path: str, ref: str | None) -> Version:
        if not ref:
            return store.version(work, path)
        if not ref.isdigit():
            abort(400, f"version {ref!r} is not a number")
        return store.version(work, path, int(ref))

    @app.errorhandler(FileNotFoundError)
    @app.errorhandler(LookupError)
    @app.errorhandler(IsADirectoryError)
    @app.errorhandler(CasError)
    def failed(exc: Exception) -> tuple[str, int]:
        # Missing things (UnknownVersion is a CasError too) are 404; damage is 500.
        missing = isinstance(exc, (FileNotFoundError, LookupError, IsADirectoryError))
        missing = missing and not isinstance(exc, MissingObject)
        return render_template("error.html", message=str(exc)), 404 if missing else 500

    @app.get("/")
    def index() -> str:
        rows = []
        for work in store.works():
            for path in store.paths(work):
                latest = store.latest(work, path)
                if latest is not None:
                    rows.append((work, path, latest))
        return render_template("index.html", rows=rows, url=store.url)

    @app.get("/path")
    def path_page() -> str:
        work, path = _need("work"), _need("path")
        versions = store.versions(work, path)
        if not versions:
            raise FileNotFoundError(f"{work}:{path} not found (no stored versions)")
        history = histories.rows(work, path, versions)
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        newest_first = list(zip(versions, history, strict=True))[::-1]
        shown = newest_first[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        pages = (len(history) + PAGE_SIZE - 1) // PAGE_SIZE
        chart = {
            "versions": [u.number for u in history],
            "logical": [u.total_logical_bytes for u in history],
            "stored": [u.total_stored_bytes for u in history],
        }
        last = history[-1]
        return render_template(
            "path.html",
            work=work,
            path=path,
            rows=shown,
            page=page,
            pages=pages,
            chart=chart,
            last=last,
            versions=[v.number for v in versions],
        )

    @app.get("/version")
    def version_page() -> str:
        work, path = _need("work"), _need("path")
        v = version_of(work, path, request.args.get("v"))
        manifest = store.manifest(v)
        return render_template(
            "version.html", v=v, tree=list(_tree(manifest, v.path)), kind=manifest.kind
        )

    @app.get("/diff")
    def diff_page() -> str:
        work, path = _need("work"), _need("path")
        a = version_of(work, path, request.args.get("a"))
        b = version_of(work, path, request.args.get("b"))
        old, new = store.manifest(a).by_path(), store.manifest(b).by_path()
        changes = diff(store.manifest(a), store.manifest(b))
        numbers = [v.number for v in store.versions(work, path)]
        return render_template(
            "diff.html",
            work=work,
            path=path,
            a=a,
            b=b,
            added=[new[p] for p in changes.added],
            removed=[old[p] for p in changes.removed],
            changed=[(old[p], new[p]) for p in changes.changed],
            versions=numbers,
        )

    @app.get("/file")
    def download() -> Response:
        work, path, inner = _need("work"), _need("path"), _need("file")
        v = version_of(work, path, request.args.get("v"))
        pieces = store.read(v, inner)
        first = next(pieces, b"")  # errors (not found, a folder) before any header is sent
        name = posixpath.basename(v.path if inner == "." else inner)

        def body() -> Iterator[bytes]:
            yield first
            yield from pieces

        return Response(
            body(),
            mimetype="application/octet-stream",
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"},
        )

    return app


def _need(name: str) -> str:
    value = request.args.get(name)
    if not value:
        abort(400, f"the query parameter {name!r} is missing")
    return value


def _label(work: str) -> str:
    """How a work is shown: drives as ``drive NAME (owner)``."""
    drive = split_drive_work(work)
    return f"drive {drive[0]} ({drive[1]})" if drive is not None else work


@dataclass(frozen=True)
class Node:
    """One line of a version's file tree."""

    entry: Entry
    name: str
    depth: int


def _tree(manifest: Manifest, stored_path: str) -> Iterator[Node]:
    """Entries in tree order (a folder, then what is inside it), with their depth."""
    if manifest.kind == FILE:
        yield Node(manifest.entries[0], posixpath.basename(stored_path), 0)
        return
    children: dict[str, list[Entry]] = {}
    for e in manifest.entries:
        children.setdefault(posixpath.dirname(e.path), []).append(e)

    def below(parent: str, depth: int) -> Iterator[Node]:
        # folders first, then files and links, each by name
        for e in sorted(children.get(parent, []), key=lambda e: (e.type != DIR, e.path)):
            yield Node(e, posixpath.basename(e.path), depth)
            if e.type == DIR:
                yield from below(e.path, depth + 1)

    yield from below("", 0)


def serve(store: Store, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``store`` read-only at ``http://host:port/`` until interrupted.

    ``port=0`` picks a free port; the address is printed once the server is ready.
    """
    app = create_app(store)
    # No line per request on the terminal: errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, app, threaded=True)
    # Every path's history is computed before the address is announced, so even the
    # first visit of a long history is quick (later versions are added as they come).
    app.extensions["cas_histories"].warm()
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {store.url} read-only at http://{shown}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
