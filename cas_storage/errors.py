"""Errors a user of the store can meet. Each carries the data it names.

Missing things stay ``FileNotFoundError`` (so ``except FileNotFoundError`` works
as with any path); everything else the store raises derives from ``CasError``.
"""

from __future__ import annotations


def not_found(what: str, where: str = "", hint: str = "") -> str:
    """The one wording of every "not found" message: ``WHAT not found[ in WHERE][ (HINT)]``.

    Examples:
        >>> not_found("root.train:ckpt version 9", hint="the latest is 2")
        'root.train:ckpt version 9 not found (the latest is 2)'
    """
    return f"{what} not found" + (f" in {where}" if where else "") + (f" ({hint})" if hint else "")


class CasError(Exception):
    """Base of every error the store raises on its own account."""


class CorruptObject(CasError):
    """An object's bytes do not hash to its name: the store is damaged."""

    def __init__(self, digest: str, got: str, where: str = "") -> None:
        self.digest = digest
        self.expected = digest
        self.got = got
        self.where = where
        at = f" (needed for {where})" if where else ""
        super().__init__(f"object {digest} is corrupt: its content hashes to {got}{at}")


class MissingObject(CasError, FileNotFoundError):
    """A manifest references an object the store does not hold."""

    def __init__(self, digest: str, where: str = "") -> None:
        self.digest = digest
        self.where = where
        at = f" (needed for {where})" if where else ""
        super().__init__(f"object {digest} is missing from the store{at}")


class UnknownVersion(CasError, LookupError):
    """``(work, path)`` exists in the catalog but has no such version."""

    def __init__(self, work: str, path: str, version: int, latest: int | None = None) -> None:
        self.work, self.path, self.version = work, path, version
        hint = f"the latest is {latest}" if latest else ""
        super().__init__(not_found(f"{work}:{path} version {version}", hint=hint))


class VersionExists(CasError):
    """A compare-and-swap on the catalog lost: that version number is taken."""

    def __init__(self, work: str, path: str, version: int) -> None:
        self.work, self.path, self.version = work, path, version
        super().__init__(f"{work}:{path} version {version} already exists")


class InvalidManifest(CasError, ValueError):
    """A manifest is malformed or names something unsafe (``..``, absolute, NUL)."""


class InvalidName(CasError, ValueError):
    """A local file's name cannot be stored as it is (e.g. it is not valid UTF-8)."""


class SourceChanged(CasError):
    """A file kept changing while it was being snapshotted."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path} changed while it was being read (tried several times); "
            "snapshot it again once it is no longer being written"
        )


class StoreUnavailable(CasError):
    """A store on an fsspec URL cannot be reached: no plugin, no credentials, no endpoint."""

    def __init__(self, url: str, cause: BaseException) -> None:
        self.url, self.cause = url, cause
        reason = str(cause) or type(cause).__name__
        if isinstance(cause, ImportError):
            reason += " (pip install 'cas_storage[s3]' for s3:// stores)"
        elif type(cause).__name__ not in reason:
            reason += f" ({type(cause).__name__})"
        super().__init__(f"cannot open store {url}: {reason}")


class StoreFormatError(CasError):
    """The store folder is damaged, or was written by a newer, unknown format."""
