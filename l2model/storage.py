"""Where shared state lives: a local directory, or a bucket of any S3-compatible store.

The curated store, the datasets and the model registry keep what every worker of a
deployment must see. On one machine that is a directory (the embedded default); on several,
a bucket (``s3://bucket[/prefix]``, through obstore: docs/decisions/0027-object-storage.md).
Both offer only what S3 offers, so code written against one holds on the other:

- ``put`` writes a whole object atomically (a reader sees the old object or the new one); it
  never appends. ``put_new`` writes only if the key is absent (S3's ``If-None-Match: *``).
- ``keys`` lists a prefix (recursively, sorted); there is no rename and no lock.

Keys are ``/``-separated relative paths. Locally, objects are files (0600, directories 0700:
they hold prompt texts and models), written to a temporary name, fsynced and renamed; a name
starting with ``.`` is never an object, so a crash's leftover is never listed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import obstore
from obstore.exceptions import AlreadyExistsError, GenericError
from obstore.store import S3Store

from l2model.private import fsync_path, open_private, private_dir


class StorageUnavailable(ConnectionError):
    """The store did not answer (or answered 5xx) through the client's own few retries: a
    caller waits it out like any unreachable dependency (a ConnectionError)."""


# obstore retries a failed request a few times itself, briefly; longer outages are the
# caller's to wait out, with its logs and health (l2loop.resilience), not a thread stuck in a
# client for minutes.
_RETRIES = {
    "max_retries": 3,
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
    "retry_timeout": timedelta(seconds=10),
}


@contextlib.contextmanager
def _answered(what: str) -> Iterator[None]:
    try:
        yield
    except GenericError as exc:
        raise StorageUnavailable(f"{what}: {str(exc).splitlines()[0]}") from exc


class Storage(Protocol):
    """Objects by key; every method blocks (run it off the event loop)."""

    def put(self, key: str, data: bytes) -> None: ...

    def put_new(self, key: str, data: bytes) -> bool:
        """Writes ``key`` only if it does not exist; False if it did."""
        ...

    def get(self, key: str) -> bytes | None: ...

    def exists(self, key: str) -> bool: ...

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a directory-like prefix, ``/``-terminated or empty)."""
        ...

    def delete(self, key: str) -> None: ...

    def location(self, key: str) -> str:
        """Where ``key`` (or, empty, the store itself) is, for people and for pointers: a
        path or an ``s3://`` URL."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file that holds ``key`` on this machine, if objects are files here."""
        ...


def _check(key: str) -> str:
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise ValueError(f"not an object key: {key!r}")
    return key


class LocalStorage:
    """Objects as files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _check(key)

    def _staged(self, target: Path, data: bytes) -> Path:
        """``data`` in a durable file beside ``target``, under a name no listing shows."""
        private_dir(target.parent)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        with open_private(staging, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return staging

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        created = not target.parent.exists()
        staging = self._staged(target, data)
        try:
            staging.replace(target)
        finally:
            staging.unlink(missing_ok=True)
        fsync_path(target.parent)
        if created:
            fsync_path(target.parent.parent)

    def put_new(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        staging = self._staged(target, data)
        try:
            # A hard link fails if the name exists: the local form of a conditional put.
            os.link(staging, target)
        except FileExistsError:
            return False
        finally:
            staging.unlink(missing_ok=True)
        fsync_path(target.parent)
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for directory, subdirs, files in os.walk(base):
            subdirs[:] = [name for name in subdirs if not name.startswith(".")]
            relative = Path(directory).relative_to(self.root)
            found += [(relative / name).as_posix() for name in files if not name.startswith(".")]
        return sorted(found)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def location(self, key: str) -> str:
        return str((self._path(key) if key else self.root).resolve())

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


@dataclass(frozen=True)
class S3Config:
    """How to reach an S3-compatible store; credentials left unset come from AWS_*."""

    url: str
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # Anonymous requests: a store on loopback that asks for no credentials.
    unsigned: bool = False


class ObjectStorage:
    """Objects in an S3 bucket (or any store obstore speaks), under an optional prefix."""

    def __init__(self, config: S3Config) -> None:
        bucket, _, prefix = config.url.removeprefix("s3://").partition("/")
        self.url = f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")
        credentials = {
            key: value
            for key, value in (
                ("access_key_id", config.access_key_id),
                ("secret_access_key", config.secret_access_key),
                ("endpoint", config.endpoint),
            )
            if value
        }
        plain_http = bool(config.endpoint and config.endpoint.startswith("http:"))
        self._store = S3Store(
            bucket,
            prefix=prefix.strip("/") or None,
            region=config.region,
            # A self-hosted store (SeaweedFS, MinIO, Ceph) answers on a path, not a subdomain.
            virtual_hosted_style_request=False,
            client_options={"allow_http": plain_http},
            skip_signature=config.unsigned,
            retry_config=_RETRIES,  # type: ignore[arg-type]
            **credentials,  # type: ignore[arg-type]
        )

    def put(self, key: str, data: bytes) -> None:
        with _answered(f"put {self.location(key)}"):
            obstore.put(self._store, _check(key), data)

    def put_new(self, key: str, data: bytes) -> bool:
        try:
            with _answered(f"put {self.location(key)}"):
                obstore.put(self._store, _check(key), data, mode="create")
        except AlreadyExistsError:
            return False
        return True

    def get(self, key: str) -> bytes | None:
        try:
            with _answered(f"get {self.location(key)}"):
                return bytes(obstore.get(self._store, _check(key)).bytes())
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        try:
            with _answered(f"head {self.location(key)}"):
                obstore.head(self._store, _check(key))
        except FileNotFoundError:
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        with _answered(f"list {self.location(prefix)}"):
            for batch in obstore.list(self._store, prefix=prefix or None):
                found += [meta["path"] for meta in batch]
        return sorted(found)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError), _answered(f"delete {self.location(key)}"):
            obstore.delete(self._store, _check(key))

    def location(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    def local_path(self, key: str) -> Path | None:
        return None


def open_storage(config: S3Config | None, local_root: Path) -> Storage:
    """The bucket ``config`` names, else the directory ``local_root``."""
    return LocalStorage(local_root) if config is None else ObjectStorage(config)


def upload_dir(storage: Storage, local: Path, prefix: str, *, last: str) -> None:
    """Copies every file under ``local`` to ``prefix``, the file named ``last`` last: a reader
    that finds ``last`` finds the rest, where there is no rename to make a directory appear
    whole."""
    files = sorted(path for path in local.rglob("*") if path.is_file())
    files.sort(key=lambda path: path.relative_to(local).as_posix() == last)
    for path in files:
        storage.put(f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())


def download_dir(storage: Storage, prefix: str, target: Path) -> Path:
    """Copies the objects under ``prefix`` into ``target``, whole or not at all: into a
    staging directory first, renamed into place (a concurrent copy of the same prefix wins
    the rename or finds it done)."""
    if target.exists():
        return target
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    private_dir(staging)
    try:
        for key in storage.keys(f"{prefix}/"):
            data = storage.get(key)
            if data is None:
                continue
            path = staging / key.removeprefix(f"{prefix}/")
            private_dir(path.parent)
            with open_private(path, "wb") as out:
                out.write(data)
        with contextlib.suppress(OSError):
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
