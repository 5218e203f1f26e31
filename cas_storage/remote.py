"""What the object database and the catalog need from an object store behind fsspec.

Many machines share one bucket, so nothing here may trust what this process saw
before: listings are always fetched afresh (s3fs caches them by default), a
create-only write reports a lost race as ``FileExistsError`` whatever form the
server's refusal took, and "now" is the server's clock, never this machine's.

On S3 these calls go straight to the S3 API through s3fs's client (one request
each: a listing page, a GET without the HEAD that ``cat_file`` adds); any other
fsspec filesystem (``memory://`` in tests) gets the same behaviour from its
ordinary methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import posixpath
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fsspec

#: How many times a write that met a conflicting write in flight (S3's 409) is resent.
CONFLICT_RETRIES = 5
#: Objects read or written at once by the batch calls.
CONCURRENCY = 32


@dataclass(frozen=True)
class Entry:
    """One listed object: full path (``bucket/key``), size, ETag when the store gives one."""

    path: str
    size: int
    etag: str | None = None
    modified: float | None = None  # seconds since the epoch, on the store's clock


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protocols or "s3a" in protocols


def connect(fs: fsspec.AbstractFileSystem) -> None:
    """Set up the S3 client now, parsing the timestamps of listings fast.

    botocore reads every ``LastModified`` with dateutil's general parser (~60 µs
    each): a listing page of 1,000 keys spent 70 ms there, longer than the rest
    of its parsing. S3 writes them in ISO 8601 UTC, which ``_timestamp`` reads
    with ``datetime.fromisoformat``. Other filesystems need nothing.
    """
    if not is_s3(fs):
        return
    fs.connect()  # s3fs: creates its session and client now
    factory = fs.session.get_component("response_parser_factory")
    # Read per response, so the client just created uses it too.
    factory.set_parser_defaults(timestamp_parser=_timestamp)


def _timestamp(value: object) -> datetime:
    """botocore's timestamp parser, with a fast path for S3's ``2026-12-02T01:23:38.000Z``."""
    if isinstance(value, str) and value.endswith("Z"):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value[:-1] + "+00:00")
    from botocore.utils import parse_timestamp  # RFC 1123 headers, epoch numbers, the rest

    parsed: datetime = parse_timestamp(value)
    return parsed


def listing(fs: fsspec.AbstractFileSystem, prefix: str, page: int = 1000) -> Iterator[Entry]:
    """Objects whose path starts with ``prefix``, in key order, fetched page by page.

    Lazy: a caller that stops after the first entries costs one request of
    ``page`` keys. Never served from a cache.
    """
    if is_s3(fs):
        yield from _s3_listing(fs, prefix, page)
        return
    folder = prefix if prefix.endswith("/") else posixpath.dirname(prefix)
    fs.invalidate_cache(folder)
    try:
        found = fs.find(folder, detail=True)
    except FileNotFoundError:
        return
    for name in sorted(found):
        info = found[name]
        full = "/" + name.lstrip("/") if prefix.startswith("/") else name
        if full.startswith(prefix) and info.get("type") != "directory":
            when = info.get("LastModified") or info.get("mtime") or info.get("created")
            if hasattr(when, "timestamp"):
                when = when.timestamp()
            size = int(info.get("size") or 0)
            yield Entry(full, size, info.get("ETag"), float(when) if when else None)


def _s3_listing(fs: Any, prefix: str, page: int) -> Iterator[Entry]:
    bucket, key, _ = fs.split_path(prefix)
    if prefix.endswith("/") and key and not key.endswith("/"):
        key += "/"
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key, "MaxKeys": page}
    while True:
        out = _s3_call(fs, "list_objects_v2", **kwargs)
        for item in out.get("Contents", []):
            yield _s3_entry(bucket, item)
        if not out.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = out["NextContinuationToken"]


def _s3_entry(bucket: str, item: dict[str, Any]) -> Entry:
    when = item.get("LastModified")
    modified = when.timestamp() if isinstance(when, datetime) else None  # botocore: datetime
    return Entry(f"{bucket}/{item['Key']}", int(item["Size"]), _etag(item.get("ETag")), modified)


def absent(fs: fsspec.AbstractFileSystem, folder: str, paths: Iterable[str]) -> set[str]:
    """Which of ``paths`` (all below ``folder``) do not exist, in few requests.

    On S3 this walks the sorted key space once per first character below
    ``folder`` (16 hex ranges for objects), jumping with ``StartAfter`` over keys
    nobody asked about: 5,000 digests in a store of 5,000 objects cost about 16
    listing pages instead of 5,000 HEADs. Elsewhere, one existence check each.
    """
    wanted = sorted(set(paths))
    if not is_s3(fs):
        return {p for p in wanted if not _exists(fs, p)}
    base = folder.rstrip("/") + "/"
    groups: dict[str, list[str]] = {}
    for path in wanted:
        groups.setdefault(path[: len(base) + 1], []).append(path)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def scan(prefix: str, pending: list[str]) -> set[str]:
        bucket, key, _ = fs.split_path(prefix)
        cut = len(prefix) - len(key)  # "bucket/" before the key
        gone: set[str] = set()
        i = 0
        while i < len(pending):
            kwargs = {"Bucket": bucket, "Prefix": key, "MaxKeys": 1000}
            kwargs["StartAfter"] = pending[i][cut:-1]  # a prefix sorts just before it
            async with limit:
                out = await fs._call_s3("list_objects_v2", **kwargs)
            keys = {f"{bucket}/{c['Key']}" for c in out.get("Contents", [])}
            last = max(keys) if keys and out.get("IsTruncated") else None
            while i < len(pending) and (last is None or pending[i] <= last):
                if pending[i] not in keys:
                    gone.add(pending[i])
                i += 1
        return gone

    async def every() -> list[set[str]]:
        return await asyncio.gather(*(scan(p, g) for p, g in groups.items()))

    import fsspec.asyn

    try:
        found = fsspec.asyn.sync(fs.loop, every)
    except Exception as exc:
        from botocore.exceptions import ClientError
        from s3fs.errors import translate_boto_error

        if isinstance(exc, ClientError):
            raise translate_boto_error(exc) from exc
        raise
    return set().union(*found) if found else set()


def exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether the object exists: one HEAD on S3 (s3fs's ``exists`` may also list)."""
    return _exists(fs, path)


def replace_existing(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Overwrite ``path`` only while it exists; ``False`` (nothing written) if it is gone.

    On S3 the PUT carries ``If-Match`` with the ETag just read, so an object deleted
    (or replaced) in between is not brought back.
    """
    if not is_s3(fs):
        if not _exists(fs, path):
            return False
        fs.pipe_file(path, data)
        return True
    bucket, key, _ = fs.split_path(path)
    try:
        head = _s3_call(fs, "head_object", Bucket=bucket, Key=key)
        _s3_call(fs, "put_object", Bucket=bucket, Key=key, Body=data, IfMatch=head["ETag"])
    except FileNotFoundError:
        return False
    except OSError as exc:
        if _is_conflict(exc):
            return False
        raise
    return True


def subfolders(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Names of the folders directly inside ``folder`` (fresh, sorted)."""
    folder = folder.rstrip("/")
    if is_s3(fs):
        bucket, key, _ = fs.split_path(folder)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{key}/", "Delimiter": "/"}
        names = []
        while True:
            out = _s3_call(fs, "list_objects_v2", **kwargs)
            names += [
                p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in out.get("CommonPrefixes", [])
            ]
            if not out.get("IsTruncated"):
                return sorted(names)
            kwargs["ContinuationToken"] = out["NextContinuationToken"]
    fs.invalidate_cache(folder)
    try:
        found = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        posixpath.basename(i["name"].rstrip("/")) for i in found if i["type"] == "directory"
    )


def read(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """The object's bytes in one request; ``FileNotFoundError`` when absent."""
    if is_s3(fs):
        # max_concurrency=1: otherwise s3fs sends a HEAD first, to split big reads.
        return bytes(fs.cat_file(path, max_concurrency=1))
    return bytes(fs.cat_file(path))


def read_range(fs: fsspec.AbstractFileSystem, path: str, offset: int, size: int) -> bytes:
    """``size`` bytes of the object at ``offset``, in one ranged request."""
    if size == 0:
        return b""
    if is_s3(fs):
        return bytes(fs.cat_file(path, start=offset, end=offset + size, max_concurrency=1))
    return bytes(fs.cat_file(path, start=offset, end=offset + size))


def read_many(fs: fsspec.AbstractFileSystem, paths: list[str]) -> dict[str, bytes | Exception]:
    """Each path's bytes, or the exception reading it raised, fetched concurrently."""
    if not paths:
        return {}
    if is_s3(fs):
        out = fs.cat(list(paths), on_error="return", batch_size=CONCURRENCY, max_concurrency=1)
    else:
        out = fs.cat(list(paths), on_error="return")
    found = {}
    for path in paths:
        value = out.get(path, out.get(fs._strip_protocol(path)))
        if value is None:
            value = FileNotFoundError(errno.ENOENT, "not read", path)
        found[path] = value if isinstance(value, Exception) else bytes(value)
    return found


def create(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> datetime:
    """Write ``data`` at ``path`` only if nothing is there; return the server's time.

    Raises ``FileExistsError`` when the object exists — also when the refusal came
    as a bare 412 that s3fs does not map, or when an earlier attempt of this very
    call (retried after a lost reply) created it: callers that must know whether
    the object is theirs compare its content.
    """
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            out = fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            raise
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as exc:
            if _exists(fs, path):
                raise FileExistsError(errno.EEXIST, f"{path} exists ({exc})", path) from exc
            if not _is_conflict(exc) or attempt == CONFLICT_RETRIES:
                raise
            time.sleep(0.05 * (attempt + 1))  # a concurrent write is in flight: let it settle
            continue
        return _server_time(fs, path, out)
    raise AssertionError("unreachable")  # pragma: no cover


def put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Store a content-addressed object: create-only, an existing one is the same bytes."""
    with contextlib.suppress(FileExistsError):
        create(fs, path, data)


def put_many(fs: fsspec.AbstractFileSystem, items: dict[str, bytes]) -> None:
    """``put`` of every ``{path: data}``, ``CONCURRENCY`` at a time; raises the first failure."""
    if not is_s3(fs) or len(items) < 2:
        for path, data in items.items():
            put(fs, path, data)
        return
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(path: str, data: bytes) -> None:
        async with limit:
            await fs._pipe_file(path, data, mode="create")

    async def every() -> list[BaseException | None]:
        return await asyncio.gather(*(one(p, d) for p, d in items.items()), return_exceptions=True)

    import fsspec.asyn

    outcomes = fsspec.asyn.sync(fs.loop, every)
    for (path, data), outcome in zip(items.items(), outcomes, strict=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, FileExistsError):
            put(fs, path, data)  # again alone: put() tells a lost race (success) from a failure


def server_time(fs: fsspec.AbstractFileSystem, path: str) -> datetime:
    """When the store says ``path`` was last written (its clock, not ours)."""
    modified: datetime = fs.modified(path)
    return modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)


def _server_time(fs: fsspec.AbstractFileSystem, path: str, reply: object) -> datetime:
    headers = {}
    if isinstance(reply, dict):
        headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    for name in ("last-modified", "date"):
        if name in headers:
            with contextlib.suppress(TypeError, ValueError):
                return parsedate_to_datetime(headers[name])
    return server_time(fs, path)


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        if is_s3(fs):
            bucket, key, _ = fs.split_path(path)
            _s3_call(fs, "head_object", Bucket=bucket, Key=key)
        else:
            fs.invalidate_cache(path)
            fs.info(path)
    except FileNotFoundError:
        return False
    return True


def _is_conflict(exc: OSError) -> bool:
    text = str(exc).lower()
    marks = ("409", "conflict", "412", "precondition", "pre-condition")
    return any(mark in text for mark in marks)


def _etag(raw: str | None) -> str | None:
    return raw.strip('"') if raw else None


def _s3_call(fs: Any, method: str, **kwargs: Any) -> dict[str, Any]:
    from botocore.exceptions import ClientError  # s3fs installs botocore

    try:
        out: dict[str, Any] = fs.call_s3(method, **kwargs)
        return out
    except ClientError as exc:
        from s3fs.errors import translate_boto_error

        raise translate_boto_error(exc) from exc


def delete_many(fs: fsspec.AbstractFileSystem, paths: Iterable[str]) -> None:
    """Remove each path that exists (absent ones are fine)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)
