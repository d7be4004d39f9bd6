"""The spike model: the model in service, re-versioned with a low threshold, in the registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from l2loop.demo.spike import register_spike_model, run_spike
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2model.artifacts import default_model_dir
from l2model.contract import Manifest
from l2model.golden import load_golden
from l2model.registry import CurrentModel, ModelPointer, ModelRegistry
from l2model.runtime import L2Model
from tests.fixtures.models import MakeModel


def _benign_flag_rate(model: L2Model) -> float:
    texts = [p.text for p in load_golden().probes if p.label == 0]
    flagged = sum(r.score >= model.threshold for r in model.score_batch(texts))
    return flagged / len(texts)


def test_the_spike_model_is_the_base_model_at_a_low_threshold(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    path = register_spike_model(registry, default_model_dir(), version="0.0.1", threshold=0.01)
    manifest, base = Manifest.read(path), Manifest.read(default_model_dir())
    assert (manifest.version, manifest.threshold) == ("0.0.1", 0.01)
    assert manifest.name == f"{base.name}-twitchy"
    assert registry.get("0.0.1").metrics == {}
    assert (path / "model.onnx").read_bytes() == (default_model_dir() / "model.onnx").read_bytes()
    spike, normal = L2Model.load(path), L2Model.load(default_model_dir())
    # What the demo relies on: benign prompts get flagged well above the 2 % alert.
    assert _benign_flag_rate(spike) > 0.1 > _benign_flag_rate(normal)


def test_a_second_spike_reuses_the_registered_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    first = register_spike_model(registry, default_model_dir(), version="0.0.1", threshold=0.01)
    again = register_spike_model(registry, first, version="0.0.1", threshold=0.01)
    assert again == first and [m.version for m in registry.versions()] == ["0.0.1"]


def test_a_version_taken_by_another_model_is_refused(
    tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_model_dir("0.0.1"))
    with pytest.raises(ValueError, match="SPIKE_MODEL_VERSION"):
        register_spike_model(registry, default_model_dir(), version="0.0.1", threshold=0.01)


async def _spike_and_read_pointer(settings: Settings) -> CurrentModel | None:
    await run_spike(settings, asyncio.Event(), at_s=0.0, for_s=0.1)
    client = connect(settings.redis_dsn)
    try:
        return await ModelPointer(client, key_prefix=settings.topic_prefix).current()
    finally:
        await client.aclose()


def test_with_nothing_promoted_the_spike_returns_to_the_configured_model(
    settings: Settings, redis_client: redis.Redis
) -> None:
    current = asyncio.run(_spike_and_read_pointer(settings))
    base = Manifest.read(settings.model_dir)
    assert current is not None and current.version == base.version
    registry = ModelRegistry(settings.registry_root)
    assert {m.version for m in registry.versions()} == {base.version, settings.spike_model_version}


def test_a_spike_left_over_by_a_killed_demo_is_undone_first(
    settings: Settings, redis_client: redis.Redis
) -> None:
    registry = ModelRegistry(settings.registry_root)
    base = registry.add(default_model_dir())
    register_spike_model(
        registry,
        default_model_dir(),
        version=settings.spike_model_version,
        threshold=settings.spike_threshold,
    )

    async def die_mid_spike() -> None:
        client = connect(settings.redis_dsn)
        pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
        await pointer.promote(registry, base.version)
        await pointer.promote(registry, settings.spike_model_version)
        await client.aclose()

    asyncio.run(die_mid_spike())
    current = asyncio.run(_spike_and_read_pointer(settings))
    assert current is not None and current.version == base.version
