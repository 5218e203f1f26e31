"""A catalog made of small immutable objects, for stores on fsspec URLs (S3, memory://).

Many machines cannot share one SQLite file, but they can share an object store
that honours create-only writes (on S3, a PUT with ``If-None-Match: *``).

Layout (store format 2), under ``catalog/<work>/<path>/`` (names percent-encoded):

``<key>.json``
    The version record, created only if absent: claiming version N *is* creating
    this object, so two writers can never both get N. It is the truth.
``<key>.<md5>.<manifest>.<files>.<bytes>.<created µs>``
    An empty *summary* written after the record, so that a listing alone yields
    every version: ``cas log`` over 1,000 versions is two listing pages, not
    1,000 GETs. It counts only while ``<md5>`` equals the ETag the same listing
    reports for the record; otherwise (a crash before it was written, a server
    whose ETags are not MD5s, a number deleted and claimed again) the record
    itself is read.

``<key>`` is ``999999999999 - N``, zero-padded: keys list newest first, so the
latest version is the first entry of one short listing. Listings are always
fetched afresh: another machine may have written a moment ago.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from . import remote
from .catalog import Catalog, Version

if TYPE_CHECKING:
    import fsspec

from .errors import CasError, StoreFormatError, UnknownVersion, VersionExists, not_found

#: Version of this layout, in ``meta.json``. Format 1 kept ``<number>.json`` records.
#: 3: objects may lie in pack files (``packs.py``); format 2 (the same catalog) is
#: upgraded on open, so an older cas_storage refuses the store instead of missing objects.
FORMAT = 3
#: The oldest format this code reads (and upgrades).
OLDEST_FORMAT = 2
_WIDTH = 12
_TOP = 10**_WIDTH - 1
_RECORD = ".json"
_CLAIM_ATTEMPTS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _name(text: str) -> str:
    return quote(text, safe="")


def _key(number: int) -> str:
    return f"{_TOP - number:0{_WIDTH}d}"


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


class ObjectCatalog(Catalog):
    """``Catalog`` over an fsspec filesystem, one immutable object per version.

    >>> import fsspec
    >>> cat = ObjectCatalog(fsspec.filesystem("memory"), "/doc-objcatalog")
    >>> cat.versions("root.train", "ckpt")
    []
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, create: bool = True) -> None:
        """Open the catalog under ``root``; a missing ``meta.json`` is created when
        ``create``, else raises ``FileNotFoundError``."""
        self.fs = fs
        self.root = root.rstrip("/")
        self.dir = posixpath.join(self.root, "catalog")
        self.store_id = self._setup(create)

    def _setup(self, create: bool) -> str:
        meta_path = posixpath.join(self.root, "meta.json")
        try:
            raw = remote.read(self.fs, meta_path)  # one GET: opening costs one request
        except FileNotFoundError:
            if not create:
                raise
            meta = {"format": FORMAT, "store_id": uuid.uuid4().hex}
            with contextlib.suppress(FileExistsError):  # another process created it first
                remote.create(self.fs, meta_path, json.dumps(meta).encode())
            raw = remote.read(self.fs, meta_path)
        try:
            meta = json.loads(raw)
            found = int(meta["format"])
            store_id = str(meta["store_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"{meta_path} is damaged: {exc}") from None
        if found > FORMAT:
            raise StoreFormatError(
                f"{meta_path} uses store format {found}, newer than this cas_storage "
                f"understands ({FORMAT}); upgrade cas_storage to read it"
            )
        if found < OLDEST_FORMAT:
            raise StoreFormatError(
                f"{meta_path} uses store format {found}, written by an older cas_storage; "
                f"this one reads formats {OLDEST_FORMAT}-{FORMAT} only (copy the versions out "
                "with the older cas_storage, or start a new store)"
            )
        if found < FORMAT:
            meta["format"] = FORMAT
            # Best effort: a reader without write access still reads the store.
            with contextlib.suppress(OSError):
                remote.replace_existing(self.fs, meta_path, json.dumps(meta).encode())
        return store_id

    # -- layout ---------------------------------------------------------------
    def _folder(self, work: str, path: str) -> str:
        return posixpath.join(self.dir, _name(work), _name(path))

    def _record_path(self, version: Version) -> str:
        return posixpath.join(
            self._folder(version.work, version.path), _key(version.number) + _RECORD
        )

    def _summary_name(self, version: Version, record: bytes) -> str:
        md5 = hashlib.md5(record, usedforsecurity=False).hexdigest()
        fields = (md5, version.manifest, version.files, version.bytes, _micros(version.created))
        return _key(version.number) + "." + ".".join(str(f) for f in fields)

    # -- reading --------------------------------------------------------------
    def works(self) -> list[str]:
        return [unquote(n) for n in remote.subfolders(self.fs, self.dir)]

    def paths(self, work: str) -> list[str]:
        return [
            unquote(n) for n in remote.subfolders(self.fs, posixpath.join(self.dir, _name(work)))
        ]

    def versions(self, work: str, path: str) -> list[Version]:
        return self._resolve(remote.listing(self.fs, self._folder(work, path) + "/"))

    def all_versions(self) -> list[Version]:
        found = self._resolve(remote.listing(self.fs, self.dir + "/"))
        return sorted(found, key=lambda v: (v.work, v.path, v.number))

    def latest(self, work: str, path: str) -> Version | None:
        found = self.newest(work, path, 1)
        return found[-1] if found else None

    def newest(self, work: str, path: str, count: int) -> list[Version]:
        # Newest first, a summary just before its record: the first `count` records
        # listed are the newest, and a page of 2 entries per version (+ 2) nearly
        # always holds them (the latest: one page of 4 entries).
        if count < 1:
            return []
        group: list[remote.Entry] = []
        page = min(1000, 2 * count + 2)
        records = 0
        for entry in remote.listing(self.fs, self._folder(work, path) + "/", page=page):
            group.append(entry)
            if entry.path.endswith(_RECORD):
                records += 1
                if records == count:
                    break
        return self._resolve(iter(group))

    def get(self, work: str, path: str, number: int | None = None) -> Version:
        if number is None:
            return super().get(work, path, None)
        probe = Version(work, path, number, "", _EPOCH, 0, 0)
        location = self._record_path(probe)
        try:
            return self._decode(location, remote.read(self.fs, location))
        except FileNotFoundError:
            latest = self.latest(work, path)
            if latest is None:
                raise FileNotFoundError(
                    not_found(f"{work}:{path}", hint="no stored versions")
                ) from None
            raise UnknownVersion(work, path, number, latest.number) from None

    def _resolve(self, entries: Iterator[remote.Entry]) -> list[Version]:
        """Versions from listed entries: summaries that match their record, else the record."""
        records: dict[str, remote.Entry] = {}
        summaries: dict[str, list[str]] = {}
        for entry in entries:
            folder, name = posixpath.split(entry.path)
            key, _, rest = name.partition(".")
            if rest == _RECORD[1:]:
                records[f"{folder}/{key}"] = entry
            elif rest:
                summaries.setdefault(f"{folder}/{key}", []).append(rest)
        found: list[Version] = []
        unread: list[str] = []
        for where, record in records.items():
            summary = self._from_summary(where, record, summaries.get(where, []))
            if summary is not None:
                found.append(summary)
            else:
                unread.append(record.path)
        for location, data in remote.read_many(self.fs, unread).items():
            if isinstance(data, FileNotFoundError):
                continue  # deleted since it was listed
            if isinstance(data, Exception):
                raise data
            found.append(self._decode(location, data))
        return sorted(found, key=lambda v: v.number)

    def _from_summary(self, where: str, record: remote.Entry, names: list[str]) -> Version | None:
        folder, key = posixpath.split(where)
        for rest in names:
            parts = rest.split(".")
            if len(parts) != 5 or record.etag is None or parts[0] != record.etag:
                continue
            try:
                work_name, path_name = folder.rsplit("/", 2)[-2:]
                return Version(
                    unquote(work_name),
                    unquote(path_name),
                    _TOP - int(key),
                    parts[1],
                    _EPOCH + timedelta(microseconds=int(parts[4])),
                    int(parts[2]),
                    int(parts[3]),
                )
            except ValueError:
                continue  # not one of ours: read the record instead
        return None

    def _decode(self, location: str, data: bytes) -> Version:
        try:
            raw = json.loads(data)
            return Version(
                raw["work"],
                raw["path"],
                int(raw["version"]),
                raw["manifest"],
                datetime.fromisoformat(raw["created"]),
                int(raw["files"]),
                int(raw["bytes"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"version record {location} is damaged: {exc}") from None

    # -- writing --------------------------------------------------------------
    def create(self, version: Version) -> None:
        # The writer's nonce makes the record ours alone: after an ambiguous failure
        # (a reply lost, the PUT resent) reading it back tells a win from a loss.
        body = {**version.to_json(), "writer": uuid.uuid4().hex}
        record = json.dumps(body, sort_keys=True).encode()
        location = self._record_path(version)
        try:
            remote.create(self.fs, location, record)
        except FileExistsError:
            try:
                won = remote.read(self.fs, location) == record
            except FileNotFoundError:
                won = False  # deleted meanwhile: the number was still taken when we tried
            if not won:
                raise VersionExists(version.work, version.path, version.number) from None
        summary = posixpath.join(posixpath.dirname(location), self._summary_name(version, record))
        # The version is recorded whatever happens now; a missing summary only means
        # readers fetch the record itself.
        with contextlib.suppress(OSError):
            remote.put(self.fs, summary, b"")

    def delete(self, version: Version) -> None:
        """Remove ``version`` if its number still holds that manifest (compare-and-delete)."""
        location = self._record_path(version)
        try:
            current = self._decode(location, remote.read(self.fs, location))
        except FileNotFoundError:
            return
        if current.manifest != version.manifest:
            return  # the number was freed and claimed again by another version
        prefix = posixpath.join(posixpath.dirname(location), _key(version.number) + ".")
        summaries = [e.path for e in remote.listing(self.fs, prefix) if e.path != location]
        remote.delete_many(self.fs, [*summaries, location])

    # -- claims (a drive path's single owner) ---------------------------------
    def _claim_location(self, name: str) -> str:
        return posixpath.join(self.root, "claims", f"{_name(name)}.json")

    def claim(self, name: str, owner: str) -> tuple[str, bool]:
        location = self._claim_location(name)
        record = json.dumps({"owner": owner}).encode()
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                remote.create(self.fs, location, record)
                return owner, True
            except FileExistsError:
                pass
            try:
                holder = json.loads(remote.read(self.fs, location))["owner"]
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreFormatError(f"claim record {location} is damaged: {exc}") from None
            return holder, False
        raise CasError(f"claim {name} kept being taken and released; try again")

    def release(self, name: str, owner: str) -> None:
        location = self._claim_location(name)
        try:
            holder = json.loads(remote.read(self.fs, location)).get("owner")
        except (FileNotFoundError, ValueError, AttributeError):
            return
        if holder == owner:
            remote.delete_many(self.fs, [location])
