"""A catalog made of small immutable objects, for stores on fsspec URLs (S3, memory://).

Many machines cannot share one SQLite file, but they can share an object store
that honours create-only writes (``open(path, "xb")``; on S3 that is a PUT with
``If-None-Match: *``). Each version is one JSON object at
``catalog/<work>/<path>/<number>.json`` (names percent-encoded), written once;
claiming version N is creating that object, so two writers can never both get N.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from datetime import datetime
from urllib.parse import quote, unquote

import fsspec

from .catalog import FORMAT, Catalog, Version
from .errors import StoreFormatError, VersionExists

_WIDTH = 12  # zero-padded numbers list in order


def _name(text: str) -> str:
    return quote(text, safe="")


class ObjectCatalog(Catalog):
    """``Catalog`` over an fsspec filesystem, one immutable object per version.

    >>> import fsspec
    >>> cat = ObjectCatalog(fsspec.filesystem("memory"), "/doc-objcatalog")
    >>> cat.versions("root.train", "ckpt")
    []
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.dir = posixpath.join(self.root, "catalog")
        self.store_id = self._setup()

    def _setup(self) -> str:
        meta_path = posixpath.join(self.root, "meta.json")
        if not self.fs.exists(meta_path):
            try:
                with self.fs.open(meta_path, "xb") as out:
                    out.write(json.dumps({"format": FORMAT, "store_id": uuid.uuid4().hex}).encode())
            except FileExistsError:
                pass  # another process created the store first
        try:
            meta = json.loads(self.fs.cat_file(meta_path))
            found = int(meta["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"{meta_path} is damaged: {exc}") from None
        if found > FORMAT:
            raise StoreFormatError(
                f"{meta_path} uses store format {found}, newer than this cas_storage "
                f"understands ({FORMAT}); upgrade cas_storage to read it"
            )
        return meta["store_id"]

    def _list(self, folder: str) -> list[str]:
        try:
            return sorted(
                posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False)
            )
        except FileNotFoundError:
            return []

    def _folder(self, work: str, path: str) -> str:
        return posixpath.join(self.dir, _name(work), _name(path))

    def _read(self, work: str, path: str, name: str) -> Version:
        location = posixpath.join(self._folder(work, path), name)
        try:
            raw = json.loads(self.fs.cat_file(location))
            return Version(
                work,
                path,
                int(raw["version"]),
                raw["manifest"],
                datetime.fromisoformat(raw["created"]),
                int(raw["files"]),
                int(raw["bytes"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"version record {location} is damaged: {exc}") from None

    def works(self) -> list[str]:
        return [unquote(n) for n in self._list(self.dir)]

    def paths(self, work: str) -> list[str]:
        return [unquote(n) for n in self._list(posixpath.join(self.dir, _name(work)))]

    def versions(self, work: str, path: str) -> list[Version]:
        names = [n for n in self._list(self._folder(work, path)) if n.endswith(".json")]
        return [self._read(work, path, n) for n in names]

    def latest(self, work: str, path: str) -> Version | None:
        names = [n for n in self._list(self._folder(work, path)) if n.endswith(".json")]
        return self._read(work, path, names[-1]) if names else None

    def all_versions(self) -> list[Version]:
        return [v for w in self.works() for p in self.paths(w) for v in self.versions(w, p)]

    def _location(self, version: Version) -> str:
        return posixpath.join(
            self._folder(version.work, version.path), f"{version.number:0{_WIDTH}d}.json"
        )

    def create(self, version: Version) -> None:
        record = json.dumps(version.to_json(), sort_keys=True).encode()
        try:
            with self.fs.open(self._location(version), "xb") as out:
                out.write(record)
        except FileExistsError:
            raise VersionExists(version.work, version.path, version.number) from None

    def delete(self, version: Version) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._location(version))

    def _claim_location(self, name: str) -> str:
        return posixpath.join(self.root, "claims", f"{_name(name)}.json")

    def claim(self, name: str, owner: str) -> tuple[str, bool]:
        location = self._claim_location(name)
        try:
            with self.fs.open(location, "xb") as out:
                out.write(json.dumps({"owner": owner}).encode())
            return owner, True
        except FileExistsError:
            pass
        try:
            return json.loads(self.fs.cat_file(location))["owner"], False
        except FileNotFoundError:
            return self.claim(name, owner)  # released meanwhile: try again
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"claim record {location} is damaged: {exc}") from None

    def release(self, name: str, owner: str) -> None:
        location = self._claim_location(name)
        try:
            holder = json.loads(self.fs.cat_file(location)).get("owner")
        except (FileNotFoundError, ValueError, AttributeError):
            return
        if holder == owner:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(location)
