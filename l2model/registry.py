"""The model registry: versioned model directories, and the ``current`` pointer in Redis.

Versions live side by side under one root (``<root>/<semver>/``), each a complete model
directory plus ``metadata.json`` (changes, metrics, date). Which one the scorers run is a
pointer in Redis, so every worker of every host agrees on it and follows it without a
restart; the previous pointers form a stack that ``rollback`` pops. The root must be storage
that every worker can read (a shared volume in production); it is owner-only (0700, files
0600), so every l2loop process of a deployment runs as one user.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import orjson
import redis.asyncio as aioredis
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from l2model.contract import MANIFEST_FILE, MODEL_FILE, Manifest
from l2model.private import make_private, private_dir

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
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, version: str) -> Path:
        return self.root / version

    def versions(self) -> list[ModelMetadata]:
        if not self.root.exists():
            return []
        found = [
            ModelMetadata.model_validate_json((entry / METADATA_FILE).read_bytes())
            for entry in self.root.iterdir()
            if (entry / METADATA_FILE).exists()
        ]
        return sorted(found, key=lambda meta: semver_key(meta.version))

    def get(self, version: str) -> ModelMetadata:
        path = self.path(version) / METADATA_FILE
        if not path.exists():
            raise RegistryError(f"version {version} is not in the registry at {self.root}")
        return ModelMetadata.model_validate_json(path.read_bytes())

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
        target = self.path(version)
        if target.exists():
            raise RegistryError(f"version {version} is already registered at {target}")
        staging = private_dir(self.root) / f".{version}.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir, staging)
        stamped = manifest.model_copy(update={"version": version})
        (staging / MANIFEST_FILE).write_bytes(
            orjson.dumps(stamped.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        )
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
        (staging / METADATA_FILE).write_bytes(
            orjson.dumps(metadata.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        )
        if not (staging / MODEL_FILE).exists():
            shutil.rmtree(staging)
            raise RegistryError(f"{model_dir} has no {MODEL_FILE}")
        # A model trained on curated examples holds fragments of their texts (a vocabulary):
        # owner-only, whatever the modes of the directory it was copied from.
        make_private(staging)
        # A reader never sees a half-copied version: the directory appears whole.
        staging.rename(target)
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
            path=str(registry.path(version).resolve()),
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
