"""The registry on a directory and on a real S3 server, the current pointer in a real Redis,
and the holder that follows it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2loop.streams.hot_reload import ModelHolder
from l2model.contract import MANIFEST_FILE, Manifest
from l2model.registry import ModelPointer, ModelRegistry, RegistryError
from l2model.runtime import L2Model
from l2model.storage import LocalStorage, Storage
from tests.fixtures.exposure import not_private
from tests.fixtures.models import MakeModel


def registry_on(storage: Storage, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(storage, prefix="models/registry", cache_dir=tmp_path / "cache")


def test_add_copies_a_whole_version_with_its_metadata(
    storage: Storage, tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = registry_on(storage, tmp_path)
    source = make_model_dir("1.0.0")
    meta = registry.add(source, changes=["first"])
    registry.add(make_model_dir("1.0.0"), version="1.10.0", changes=["renamed on entry"])
    registry.add(make_model_dir("1.2.0"))
    assert [m.version for m in registry.versions()] == ["1.0.0", "1.2.0", "1.10.0"]
    assert meta.changes == ["first"] and meta.kind == Manifest.read(source).kind
    assert Manifest.read(registry.path("1.10.0")).version == "1.10.0"
    assert L2Model.load(registry.path("1.10.0")).version == "1.10.0"


@pytest.mark.usefixtures("loose_umask")
def test_a_registered_version_is_owner_only_whatever_its_source(
    tmp_path: Path, make_model_dir: MakeModel
) -> None:
    source = make_model_dir("1.0.0")
    source.chmod(0o755)
    for path in source.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    registry = ModelRegistry(
        LocalStorage(tmp_path / "var" / "models" / "registry"), cache_dir=tmp_path / "cache"
    )
    registry.add(source)
    assert not_private(tmp_path / "var") == []
    assert L2Model.load(registry.path("1.0.0")).version == "1.0.0"


def test_a_version_is_registered_once(
    storage: Storage, tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = registry_on(storage, tmp_path)
    registry.add(make_model_dir("2.0.0"))
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(make_model_dir("2.0.0"))
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.get("9.9.9")


def test_promote_and_rollback_move_the_pointer(
    settings: Settings, storage: Storage, tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = registry_on(storage, tmp_path)
    for version in ("1.0.0", "1.1.0"):
        registry.add(make_model_dir(version))

    async def scenario() -> list[str | None]:
        client = connect(settings.redis_dsn)
        pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
        seen = [None if (c := await pointer.current()) is None else c.version]
        await pointer.promote(registry, "1.0.0")
        await pointer.promote(registry, "1.1.0")
        seen.append((await pointer.current()).version)  # type: ignore[union-attr]
        seen.append((await pointer.rollback()).version)
        with pytest.raises(RegistryError, match="nothing to roll back"):
            await pointer.rollback()
        with pytest.raises(RegistryError):
            await pointer.promote(registry, "3.0.0")
        seen.append((await pointer.current()).version)  # type: ignore[union-attr]
        await client.aclose()
        return seen

    assert asyncio.run(scenario()) == [None, "1.1.0", "1.0.0", "1.0.0"]


def test_holder_switches_to_the_promoted_model_and_survives_a_broken_one(
    settings: Settings, storage: Storage, tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = registry_on(storage, tmp_path)
    registry.add(make_model_dir("1.0.0"))
    registry.add(make_model_dir("1.1.0"))
    broken = make_model_dir("1.2.0")
    (broken / "model.onnx").write_bytes(b"not a graph")
    registry.add(broken)

    async def scenario() -> list[tuple[bool, str]]:
        client = connect(settings.redis_dsn)
        pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
        holder = ModelHolder(
            L2Model.load(registry.path("1.0.0")), pointer, threads=1, local_dir=registry.local_dir
        )
        steps = [(await holder.refresh(), holder.current.version)]
        await pointer.promote(registry, "1.1.0")
        steps.append((await holder.refresh(), holder.current.version))
        steps.append((await holder.refresh(), holder.current.version))
        await pointer.promote(registry, "1.2.0")
        steps.append((await holder.refresh(), holder.current.version))
        await client.aclose()
        return steps

    assert asyncio.run(scenario()) == [
        (False, "1.0.0"),
        (True, "1.1.0"),
        (False, "1.1.0"),
        (False, "1.1.0"),
    ]


def test_the_training_cut_off_comes_from_the_caller_or_the_manifest(
    tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = ModelRegistry(LocalStorage(tmp_path / "registry"), cache_dir=tmp_path / "cache")
    assert registry.add(make_model_dir("1.0.0")).trained_through is None
    cutoff = datetime(2026, 11, 1, tzinfo=UTC)
    assert registry.add(make_model_dir("1.1.0"), trained_through=cutoff).trained_through == cutoff
    written = make_model_dir("1.2.0")
    manifest = orjson.loads((written / MANIFEST_FILE).read_bytes())
    (written / MANIFEST_FILE).write_bytes(
        orjson.dumps(manifest | {"trained_through": "2026-10-01T00:00:00Z"})
    )
    registry.add(written)
    assert registry.get("1.2.0").trained_through == datetime(2026, 10, 1, tzinfo=UTC)
