"""Write the version history into a git repository (dulwich), one ref per stored path.

Each version becomes a commit on ``refs/cas/<work>/<path>`` whose tree renders
the manifest as small pointer files (digest, size, mode), so stock ``git log``,
``git show`` and ``git diff`` show what changed between versions without the
bytes. Running it again adds only versions newer than the ref's head.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from dulwich.index import commit_tree
from dulwich.objects import Blob, Commit
from dulwich.repo import Repo

from .catalog import Catalog, Version
from .checkout import load_manifest
from .manifest import FILE, SYMLINK, Entry
from .objects import ObjectStore
from .progress import Progress

if TYPE_CHECKING:  # NewTypes of recent dulwich; plain bytes at run time
    from dulwich.objects import ObjectID
    from dulwich.refs import Ref

_VERSION_LINE = re.compile(rb"^cas-version: (\d+)$", re.MULTILINE)


def ref_name(work: str, path: str) -> bytes:
    """``refs/cas/<work>/<path>``, a valid git ref for any work and stored path.

    Characters git forbids are percent-encoded, and so are the dots git's rules
    single out: a component's leading ``.``, ``..``, a trailing ``.`` or
    ``.lock``.

    >>> ref_name("drive:shared/root.a", "data")
    b'refs/cas/drive%3Ashared%2Froot.a/data'
    >>> ref_name("root.w", ".hidden/x.lock")
    b'refs/cas/root.w/%2Ehidden/x%2Elock'
    """
    parts = [_ref_component(work)] + [_ref_component(part) for part in path.split("/")]
    return "/".join(["refs", "cas", *parts]).encode()


def _ref_component(text: str) -> str:
    safe = quote(text, safe="._-").replace("~", "%7E") or "%00"  # quote keeps '~'
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    while ".." in safe:
        safe = safe.replace("..", ".%2E")
    if safe.endswith(".lock"):
        safe = safe[: -len(".lock")] + "%2Elock"
    if safe.endswith("."):
        safe = safe[:-1] + "%2E"
    return safe


def pointer(entry: Entry) -> bytes:
    """The small text a file becomes in the exported tree."""
    lines = [f"cas-object {entry.digest}", f"size {entry.size}", f"mode {entry.mode:o}"]
    if entry.chunks:
        lines.append(f"chunks {len(entry.chunks)}")
    return ("\n".join(lines) + "\n").encode()


def export_git(
    objects: ObjectStore,
    catalog: Catalog,
    repo_path: str,
    work: str | None = None,
    path: str | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Export versions (all, one work's, or one path's) into ``repo_path``.

    Creates the repository if needed. Returns ``{"work:path": commits added}``.
    """
    if not os.path.isdir(os.path.join(repo_path, ".git")) and not os.path.isfile(
        os.path.join(repo_path, "HEAD")
    ):
        os.makedirs(repo_path, exist_ok=True)
        Repo.init(repo_path).close()
    added: dict[str, int] = {}
    works = [work] if work else catalog.works()
    keys = [(w, p) for w in works for p in ([path] if path else catalog.paths(w))]
    histories = {(w, p): catalog.versions(w, p) for w, p in keys}
    progress = progress or Progress()
    progress.start(total_items=sum(len(vs) for vs in histories.values()))
    with Repo(repo_path) as repo:
        for (w, p), versions in histories.items():
            added[f"{w}:{p}"] = _export_path(repo, objects, versions, w, p, progress)
    return added


def _export_path(
    repo: Repo,
    objects: ObjectStore,
    versions: list[Version],
    work: str,
    path: str,
    progress: Progress,
) -> int:
    ref = cast("Ref", ref_name(work, path))
    parent: ObjectID | None = None
    done = 0
    if ref in repo.refs:
        parent = repo.refs[ref]
        head = repo[parent]
        found = _VERSION_LINE.search(head.message) if isinstance(head, Commit) else None
        done = int(found.group(1)) if found else 0
    count = 0
    for v in versions:
        progress.advance(1)
        if v.number <= done:
            continue
        parent = _commit(repo, objects, v, parent)
        count += 1
    if count and parent is not None:
        repo.refs[ref] = parent
    return count


def _commit(repo: Repo, objects: ObjectStore, v: Version, parent: ObjectID | None) -> ObjectID:
    manifest = load_manifest(objects, v.manifest)
    blobs: list[tuple[bytes, ObjectID, int]] = []
    for entry in manifest.entries:
        name = (os.path.basename(v.path) if entry.path == "." else entry.path).encode()
        if entry.type == FILE:
            blob = Blob.from_string(pointer(entry))
            mode = 0o100755 if entry.mode & 0o111 else 0o100644
        elif entry.type == SYMLINK:
            blob, mode = Blob.from_string(entry.target.encode()), 0o120000
        else:
            continue  # git has no empty folders; folders appear through their files
        repo.object_store.add_object(blob)
        blobs.append((name, blob.id, mode))
    commit = Commit()
    commit.tree = commit_tree(repo.object_store, blobs)
    commit.parents = [parent] if parent else []
    commit.author = commit.committer = b"cas <cas@localhost>"
    commit.author_time = commit.commit_time = int(v.created.timestamp())
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = b"UTF-8"
    commit.message = (
        f"{v.label()}\n\n"
        f"cas-version: {v.number}\ncas-manifest: {v.manifest}\n"
        f"files: {v.files}\nbytes: {v.bytes}\n"
    ).encode()
    repo.object_store.add_object(commit)
    return commit.id
