"""Manifests: the file list of one snapshot, in a canonical byte encoding.

A manifest is either a ``dir`` (entries for every file, symlink and folder below
the snapshotted folder, by relative POSIX path) or a ``file`` (one entry, whose
path is ``"."``). A file's content is one object (``chunks`` empty: the object
is ``digest``) or a list of ``(digest, size)`` chunks. The manifest's own digest
is the digest of its canonical encoding, so equal trees give equal manifests.
"""

from __future__ import annotations

import json
import posixpath
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _string  # what json.dumps uses for str
from typing import Any, NamedTuple

from .errors import InvalidManifest, not_found
from .hashing import digest_bytes, is_digest
from .keys import ancestors

FORMAT = 1
FILE, SYMLINK, DIR = "file", "symlink", "dir"
SETID_BITS = stat.S_ISUID | stat.S_ISGID


class Entry(NamedTuple):
    """One file, symlink or folder of a snapshot.

    A named tuple, not a dataclass: a manifest of 100,000 files builds 100,000 of
    these on every snapshot and every decode, and a tuple is built several times faster.

    >>> Entry("a.txt", FILE, 0o644, 5, "0" * 32).is_file
    True
    """

    path: str
    type: str
    mode: int = 0o644
    size: int = 0
    digest: str = ""
    chunks: tuple[tuple[str, int], ...] = ()
    target: str = ""

    @property
    def is_file(self) -> bool:
        return self.type == FILE

    def objects(self) -> list[str]:
        """Digests of the objects holding this entry's content."""
        if self.type != FILE:
            return []
        return [d for d, _ in self.chunks] if self.chunks else [self.digest]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "type": self.type, "mode": self.mode}
        if self.type == FILE:
            out["size"] = self.size
            out["digest"] = self.digest
            if self.chunks:
                out["chunks"] = [list(c) for c in self.chunks]
        elif self.type == SYMLINK:
            out["target"] = self.target
        return out

    def encode(self) -> str:
        """``to_json`` in the canonical encoding (``json.dumps`` with sorted keys, no
        spaces, no ASCII escaping), spelled out: ~3x faster for large manifests."""
        head = f'{{"mode":{self.mode:d},"path":{_string(self.path)},'
        if self.type == FILE:
            chunks = ""
            if self.chunks:
                listed = ",".join(f"[{_string(d)},{n:d}]" for d, n in self.chunks)
                chunks = f'"chunks":[{listed}],'
            return (
                f'{{{chunks}"digest":{_string(self.digest)},"mode":{self.mode:d},'
                f'"path":{_string(self.path)},"size":{self.size:d},"type":"file"}}'
            )
        if self.type == SYMLINK:
            return f'{head}"target":{_string(self.target)},"type":"symlink"}}'
        return f'{head}"type":{_string(self.type)}}}'

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Entry:
        try:
            return cls(
                path=raw["path"],
                type=raw["type"],
                mode=raw["mode"],
                size=raw.get("size", 0),
                digest=raw.get("digest", ""),
                chunks=tuple((d, s) for d, s in raw.get("chunks", ())),
                target=raw.get("target", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidManifest(f"malformed manifest entry {raw!r}: {exc}") from None


@dataclass(frozen=True)
class Manifest:
    """A validated, sorted list of entries.

    >>> m = Manifest.build("dir", [Entry("b", FILE, 0o644, 0, "99aa06d3014798d86001c324468d497f")])
    >>> Manifest.decode(m.encode()) == m
    True
    """

    kind: str
    entries: tuple[Entry, ...] = field(default=())

    @classmethod
    def build(cls, kind: str, entries: Iterable[Entry], validate: bool = True) -> Manifest:
        """Sort and (unless ``validate`` is false) validate ``entries``.

        ``validate=False`` is for entries this process just made from a walk of a local
        folder: names the filesystem gave, digests our own hashing computed, symlinks
        already checked. Re-checking them costs ~1 s per 100,000 files; everything read
        from a store is validated in ``decode``.
        """
        manifest = cls(kind, tuple(sorted(entries, key=_path_key)))
        if validate:
            manifest.validate()
        return manifest

    # -- encoding -----------------------------------------------------------
    def encode(self) -> bytes:
        """The canonical encoding: ``json.dumps({"entries": [e.to_json() ...], "format":
        FORMAT, "kind": kind}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
        byte for byte (a test holds the two equal), built without the dicts."""
        entries = ",".join([e.encode() for e in self.entries])
        tail = f'],"format":{FORMAT},"kind":{_string(self.kind)}}}'
        return f'{{"entries":[{entries}{tail}'.encode()

    def digest(self) -> str:
        return digest_bytes(self.encode())

    @classmethod
    def decode(cls, data: bytes, validate: bool = True) -> Manifest:
        """Parse and validate; raises ``InvalidManifest`` for anything malformed or unsafe.

        ``validate=False`` parses only, for a caller that validates later or already
        validated these very bytes (``checkout.load_manifest``).
        """
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidManifest(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
            raise InvalidManifest("manifest must be an object with an 'entries' list")
        if body.get("format") != FORMAT:
            raise InvalidManifest(f"unknown manifest format {body.get('format')!r}")
        entries = [Entry.from_json(raw) for raw in body["entries"]]
        manifest = cls(body.get("kind", ""), tuple(entries))
        if validate:
            manifest.validate()
        return manifest

    @staticmethod
    def objects_in(data: bytes) -> set[str]:
        """``decode(data).objects()`` without building the manifest: for a hint only.

        Good for a question like "which objects did the previous version need" (there a
        wrong answer costs a rewrite, not correctness). Reads the canonical encoding
        directly, ~20x faster than decoding; anything else is decoded.
        """
        if not data.endswith(_CANONICAL_TAILS):
            return Manifest.decode(data).objects()
        return {(a or b).decode() for a, b in _OBJECT_REF.findall(data)}

    @staticmethod
    def kind_in(data: bytes) -> str:
        """``decode(data).kind`` without decoding the entries: the canonical encoding
        ends with it. Anything else is decoded (and validated).

        >>> Manifest.kind_in(Manifest.build("dir", []).encode())
        'dir'
        """
        for kind, tail in zip(("dir", "file"), _CANONICAL_TAILS, strict=True):
            if data.endswith(tail):
                return kind
        return Manifest.decode(data).kind

    # -- queries ------------------------------------------------------------
    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == FILE]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries if e.type == FILE)

    def objects(self) -> set[str]:
        """Every object digest the content of this manifest needs."""
        return {d for e in self.entries for d in e.objects()}

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def subtree(self, rel: str) -> Manifest:
        """The manifest of the file or folder at ``rel`` inside this one.

        Raises ``FileNotFoundError`` when ``rel`` is not in it.
        """
        rel = posixpath.normpath(rel)
        if rel == ".":
            return self
        prefix = rel + "/"
        inner = [e for e in self.entries if e.path.startswith(prefix)]
        exact = next((e for e in self.entries if e.path == rel), None)
        if exact is not None and exact.type != DIR:
            return Manifest.build(FILE, [_replace_path(exact, ".")])
        if exact is None and not inner:
            raise FileNotFoundError(not_found(rel, "this snapshot"))
        return Manifest.build(DIR, [_replace_path(e, e.path[len(prefix) :]) for e in inner])

    def has(self, rel: str) -> bool:
        """Whether ``rel`` (a path inside this snapshot, ``"."`` for itself) is in it."""
        return rel == "." or any(e.path == rel for e in self.entries)

    # -- surgery (new manifests; a manifest itself never changes) -------------
    def without(self, rel: str) -> Manifest:
        """This folder manifest without ``rel`` and everything below it.

        >>> m = Manifest.build(DIR, [Entry("a", DIR, 0o755), Entry("a/b", DIR, 0o755)])
        >>> [e.path for e in m.without("a/b").entries]
        ['a']
        """
        prefix = rel + "/"
        kept = [e for e in self.entries if e.path != rel and not e.path.startswith(prefix)]
        return Manifest.build(self.kind, kept)

    def graft(self, rel: str, part: Manifest, folder_modes: dict[str, int]) -> Manifest:
        """This folder manifest with ``part`` (file or folder) placed at ``rel``.

        Whatever was at ``rel`` goes. Folders on the way to ``rel`` that are
        missing (or are not folders) are added with the mode ``folder_modes``
        gives them (default ``0o755``); ``folder_modes[rel]`` is the mode of
        ``rel`` itself when ``part`` is a folder.

        >>> empty = "99aa06d3014798d86001c324468d497f"
        >>> one = Manifest.build(FILE, [Entry(".", FILE, 0o644, 0, empty)])
        >>> [e.path for e in Manifest.build(DIR, []).graft("a/x", one, {}).entries]
        ['a', 'a/x']
        """
        base = self if self.kind == DIR else Manifest.build(DIR, [])
        entries = list(base.without(rel).entries)
        have = {e.path: e for e in entries}
        for parent in reversed(ancestors(rel)):
            if parent in have and have[parent].type == DIR:
                continue
            entries = list(Manifest(DIR, tuple(entries)).without(parent).entries)
            entries.append(Entry(parent, DIR, folder_modes.get(parent, 0o755)))
            have = {e.path: e for e in entries}
        if part.kind == FILE:
            entries.append(_replace_path(part.entries[0], rel))
        else:
            entries.append(Entry(rel, DIR, folder_modes.get(rel, 0o755)))
            entries += [_replace_path(e, f"{rel}/{e.path}") for e in part.entries]
        return Manifest.build(DIR, entries)

    # -- validation ---------------------------------------------------------
    def validate(self) -> None:
        """Reject anything that could write outside the destination or is ambiguous."""
        if self.kind not in (FILE, DIR):
            raise InvalidManifest(f"unknown manifest kind {self.kind!r}")
        if self.kind == FILE:
            if len(self.entries) != 1 or self.entries[0].path != "." or not self.entries[0].is_file:
                raise InvalidManifest("a file manifest holds exactly one file entry named '.'")
            _validate_content(self.entries[0])
            return
        types: dict[str, str] = {}
        for entry in self.entries:
            _validate_name(entry.path)
            if entry.path in types:
                raise InvalidManifest(f"duplicate entry {entry.path!r}")
            types[entry.path] = entry.type
            if entry.type == FILE:
                _validate_content(entry)
            elif entry.type == SYMLINK:
                _validate_link(entry)
            elif entry.type == DIR:
                _validate_mode(entry)
            else:
                raise InvalidManifest(f"{entry.path!r} has unknown type {entry.type!r}")
        for entry in self.entries:
            parent = entry.path.rpartition("/")[0]  # posixpath.dirname, for valid names
            # Every parent must be listed as a folder: a file or symlink there (or one
            # already on the destination disk) would let a checkout write through it.
            if parent and types.get(parent) != DIR:
                raise InvalidManifest(f"{entry.path!r} lies below {parent!r}, not a listed folder")


def _path_key(entry: Entry) -> str:
    return entry.path


#: In the canonical encoding (sorted keys, no spaces) an object is named either as the
#: first key of an unchunked file, ``{"digest":"<hex>"`` (a chunked file's ``chunks``
#: key sorts first), or as a chunk ``["<hex>",<size>]``. Inside a JSON string every
#: ``"`` is escaped, so neither pattern can be spelled by a path or a link target.
_OBJECT_REF = re.compile(rb'\{"digest":"([0-9a-f]{32})"|\["([0-9a-f]{32})",[0-9]+\]')
_CANONICAL_TAILS = tuple(f',"format":{FORMAT},"kind":"{k}"}}'.encode() for k in ("dir", "file"))


def _replace_path(entry: Entry, path: str) -> Entry:
    return Entry(path, entry.type, entry.mode, entry.size, entry.digest, entry.chunks, entry.target)


#: NUL, or an empty, ``.`` or ``..`` component (a leading ``/`` is an empty one).
_BAD_NAME = re.compile(r"\x00|(?:^|/)\.{0,2}(?:/|$)")


def _validate_name(path: str) -> None:
    if not isinstance(path, str) or not path:
        raise InvalidManifest(f"empty or non-text entry name {path!r}")
    if _BAD_NAME.search(path) is None:
        return  # one regex for the common case; the checks below say what is wrong
    if "\0" in path:
        raise InvalidManifest(f"entry name {path!r} contains NUL")
    if path.startswith("/"):
        raise InvalidManifest(f"entry name {path!r} is absolute")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidManifest(f"entry name {path!r} has an empty, '.' or '..' component")


def _validate_mode(entry: Entry) -> None:
    if not isinstance(entry.mode, int) or isinstance(entry.mode, bool) or entry.mode & ~0o7777:
        raise InvalidManifest(f"{entry.path!r} has invalid mode {entry.mode!r}")


def _validate_content(entry: Entry) -> None:
    _validate_mode(entry)
    if entry.mode & SETID_BITS:
        # A checkout (often as root) must never create set-user/group-ID programs
        # from whatever a store holds; snapshots do not record these bits.
        raise InvalidManifest(f"{entry.path!r} asks for set-user/group-ID mode {entry.mode:o}")
    if type(entry.size) is not int or entry.size < 0:
        raise InvalidManifest(f"{entry.path!r} has invalid size {entry.size!r}")
    if not is_digest(entry.digest):
        raise InvalidManifest(f"{entry.path!r} has invalid digest {entry.digest!r}")
    if entry.chunks:
        if any(not is_digest(d) or type(s) is not int or s <= 0 for d, s in entry.chunks):
            raise InvalidManifest(f"{entry.path!r} has an invalid chunk list")
        if sum(s for _, s in entry.chunks) != entry.size:
            raise InvalidManifest(f"{entry.path!r}: chunk sizes do not add up to its size")


def _validate_link(entry: Entry) -> None:
    target = entry.target
    if not target or "\0" in target or target.startswith("/"):
        raise InvalidManifest(f"symlink {entry.path!r} -> {target!r} points outside the tree")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise InvalidManifest(f"symlink {entry.path!r} -> {target!r} points outside the tree")


def link_stays_inside(rel_path: str, target: str) -> bool:
    """Whether a symlink at ``rel_path`` pointing to ``target`` stays in the tree."""
    try:
        _validate_link(Entry(rel_path, SYMLINK, target=target))
    except InvalidManifest:
        return False
    return True


def mode_bits(st_mode: int) -> int:
    """The permission bits a manifest records for a folder (no file-type bits)."""
    return stat.S_IMODE(st_mode)


def file_mode_bits(st_mode: int) -> int:
    """The permission bits a manifest records for a file: no set-user/group-ID bits.

    >>> oct(file_mode_bits(0o104755))
    '0o755'
    """
    return stat.S_IMODE(st_mode) & ~SETID_BITS


@dataclass(frozen=True)
class Diff:
    """What changed from one manifest to another, by path."""

    added: list[str]
    removed: list[str]
    changed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff(old: Manifest, new: Manifest) -> Diff:
    """Paths added, removed and changed (content, type, mode or link target).

    >>> a = Manifest.build("dir", [Entry("x", "dir", 0o755)])
    >>> diff(a, Manifest.build("dir", [])).removed
    ['x']
    """
    before, after = old.by_path(), new.by_path()
    return Diff(
        added=sorted(after.keys() - before.keys()),
        removed=sorted(before.keys() - after.keys()),
        changed=sorted(p for p in before.keys() & after.keys() if before[p] != after[p]),
    )
