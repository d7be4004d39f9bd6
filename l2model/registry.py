"""The model registry: versioned model directories, and the ``current`` pointer in Redis.

Versions live side by side under one prefix of shared storage (``<prefix>/<semver>/``,
l2model.storage: a directory, or a bucket every worker reads), each a complete model
directory plus ``metadata.json`` (changes, metrics, date), written last: a version whose
metadata is there is whole. Which one the scorers run is a pointer in Redis (the version and
where it is), so every worker of every host agrees on it and follows it without a restart;
the previous pointers form a stack that ``rollback`` pops. A worker runs a version from a
local directory: the registry's own where it is a directory, else a copy fetched once into
its cache. Locally it is owner-only (0700, files 0600), so every l2loop process of a
deployment runs as one user.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import orjson
import redis.asyncio as aioredis
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from l2model.contract import MANIFEST_FILE, MODEL_FILE, Manifest
from l2model.storage import LocalStorage, Storage, download_dir

METADATA_FILE = "metadata.json"
SEMVER = r"^\d+\.\d+\.\d+$"


def semver_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class ModelMetadata(BaseModel):
    """``metadata.json``: what changed in a version and how it measured (seeds, step 7)."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(pattern=SEMVER)
    name: str
    kind: str
    registered_at: datetime
    changes: list[str] = Field(default_factory=list)
    metrics: dict[str, object] = Field(default_factory=dict)
    # The training data's cut-off: curated examples up to this time are in it. Promoting the
    # version expires the suppressions made before then (l2loop.stores.suppressions). None: not
    # trained on curated examples, or not known.
    trained_through: AwareDatetime | None = None


class CurrentModel(BaseModel):
    """The value of the ``current`` pointer."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(pattern=SEMVER)
    path: str
    promoted_at: datetime


class RegistryError(RuntimeError):
    pass


class ModelRegistry:
    def __init__(self, storage: Storage, *, prefix: str = "", cache_dir: Path) -> None:
        self.storage = storage
        self._prefix = prefix.strip("/")
        self._cache_dir = cache_dir

    @classmethod
    def in_directory(cls, root: Path) -> ModelRegistry:
        """A registry that is a local directory: its versions run in place, nothing cached."""
        return cls(LocalStorage(root), cache_dir=root)

    def _key(self, version: str, name: str = "") -> str:
        parts = [part for part in (self._prefix, version, name) if part]
        return "/".join(parts)

    @property
    def location(self) -> str:
        return self.storage.location(self._prefix)

    def where(self, version: str) -> str:
        """Where ``version`` is, as the pointer names it: a path or a URL."""
        return self.storage.location(self._key(version))

    def has(self, version: str) -> bool:
        return self.storage.exists(self._key(version, METADATA_FILE))

    def path(self, version: str) -> Path:
        """A local directory holding ``version``: the registry's own, or a fetched copy."""
        return self.local_dir(self.where(version))

    def local_dir(self, where: str) -> Path:
        """The local directory of a pointer's ``path``: a path as it is; a location of this
        registry fetched, once, into the cache (a version never changes once registered)."""
        if not where.startswith(f"{self.location}/"):
            return Path(where)
        version = where.rsplit("/", 1)[-1]
        local = self.storage.local_path(self._key(version))
        if local is not None:
            return local
        return download_dir(self.storage, self._key(version), self._cache_dir / version)

    def versions(self) -> list[ModelMetadata]:
        prefix = f"{self._prefix}/" if self._prefix else ""
        found = [
            ModelMetadata.model_validate_json(data)
            for key in self.storage.keys(prefix)
            if key.count("/") == prefix.count("/") + 1 and key.endswith(f"/{METADATA_FILE}")
            if (data := self.storage.get(key)) is not None
        ]
        return sorted(found, key=lambda meta: semver_key(meta.version))

    def get(self, version: str) -> ModelMetadata:
        data = self.storage.get(self._key(version, METADATA_FILE))
        if data is None:
            raise RegistryError(f"version {version} is not in the registry at {self.location}")
        return ModelMetadata.model_validate_json(data)

    def add(
        self,
        model_dir: Path,
        *,
        version: str | None = None,
        changes: list[str] | None = None,
        trained_through: datetime | None = None,
    ) -> ModelMetadata:
        """Copies a model directory in as ``version`` (default: its manifest's version).

        ``trained_through`` defaults to the manifest's ``trained_through``, where a trainer
        wrote one."""
        manifest = Manifest.read(model_dir)
        version = version or manifest.version
        if self.has(version):
            raise RegistryError(f"version {version} is already registered at {self.where(version)}")
        if not (model_dir / MODEL_FILE).exists():
            raise RegistryError(f"{model_dir} has no {MODEL_FILE}")
        stamped = manifest.model_copy(update={"version": version})
        extra = manifest.model_extra or {}
        metrics = extra.get("metrics", {})
        metadata = ModelMetadata(
            version=version,
            name=manifest.name,
            kind=manifest.kind,
            registered_at=datetime.now(tz=UTC),
            changes=changes or [],
            metrics=metrics if isinstance(metrics, dict) else {},
            trained_through=trained_through or extra.get("trained_through"),
        )
        for path in sorted(model_dir.rglob("*")):
            if path.is_file() and path.name not in (MANIFEST_FILE, METADATA_FILE):
                name = path.relative_to(model_dir).as_posix()
                self.storage.put(self._key(version, name), path.read_bytes())
        self.storage.put(
            self._key(version, MANIFEST_FILE),
            orjson.dumps(stamped.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        )
        # The metadata last, and only if no other process registered the version meanwhile:
        # a reader that finds it finds a whole version.
        if not self.storage.put_new(
            self._key(version, METADATA_FILE),
            orjson.dumps(metadata.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        ):
            raise RegistryError(f"version {version} was registered meanwhile by another process")
        return metadata


class ModelPointer:
    """``current`` and its history in Redis; every scorer polls ``current``."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self._client = client
        self._current_key = f"{key_prefix}model:current"
        self._history_key = f"{key_prefix}model:history"

    async def current(self) -> CurrentModel | None:
        raw = await self._client.get(self._current_key)
        return None if raw is None else CurrentModel.model_validate_json(raw)

    async def promote(self, registry: ModelRegistry, version: str) -> CurrentModel:
        registry.get(version)
        new = CurrentModel(
            version=version,
            path=registry.where(version),
            promoted_at=datetime.now(tz=UTC),
        )
        previous = await self._client.get(self._current_key)
        async with self._client.pipeline(transaction=True) as pipe:
            if previous is not None:
                pipe.lpush(self._history_key, previous)
            pipe.set(self._current_key, new.model_dump_json())
            await pipe.execute()
        return new

    async def rollback(self) -> CurrentModel:
        previous = cast(bytes | None, await self._client.lpop(self._history_key))
        if previous is None:
            raise RegistryError("nothing to roll back to: no earlier promotion is recorded")
        restored = CurrentModel.model_validate_json(previous)
        await self._client.set(self._current_key, previous)
        return restored
