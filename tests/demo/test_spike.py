"""The spike model (the model in service, re-versioned with a low threshold, in the registry)
and its hurried release: a rollout straight to the first canary stage, on the real Redis,
aborted when the spike ends unless it ended before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from l2loop.demo.spike import hurried_stages, register_spike_model, run_spike
from l2loop.release.rollout import Rollouts
from l2loop.schemas.rollout import Rollout
from l2loop.settings import Settings
from l2loop.stores.rollout import RolloutStore
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connected
from l2model.artifacts import default_model_dir
from l2model.contract import Manifest
from l2model.golden import load_golden
from l2model.registry import ModelPointer, ModelRegistry
from l2model.runtime import L2Model
from tests.fixtures.models import MakeModel


def _benign_flag_rate(model: L2Model) -> float:
    texts = [p.text for p in load_golden().probes if p.label == 0]
    flagged = sum(r.score >= model.threshold for r in model.score_batch(texts))
    return flagged / len(texts)


def test_the_spike_model_is_the_base_model_at_a_low_threshold(tmp_path: Path) -> None:
    registry = ModelRegistry.in_directory(tmp_path / "registry")
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
    registry = ModelRegistry.in_directory(tmp_path / "registry")
    first = register_spike_model(registry, default_model_dir(), version="0.0.1", threshold=0.01)
    again = register_spike_model(registry, first, version="0.0.1", threshold=0.01)
    assert again == first and [m.version for m in registry.versions()] == ["0.0.1"]


def test_a_version_taken_by_another_model_is_refused(
    tmp_path: Path, make_model_dir: MakeModel
) -> None:
    registry = ModelRegistry.in_directory(tmp_path / "registry")
    registry.add(make_model_dir("0.0.1"))
    with pytest.raises(ValueError, match="SPIKE_MODEL_VERSION"):
        register_spike_model(registry, default_model_dir(), version="0.0.1", threshold=0.01)


async def _state(settings: Settings) -> tuple[Rollout | None, list[Rollout], str | None]:
    """The rollout state, the finished runs (newest first) and the pointer's version."""
    async with connected(settings.redis_dsn) as client:
        store = RolloutStore(client, key_prefix=settings.topic_prefix)
        current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
        return await store.get(), await store.runs(), None if current is None else current.version


async def _start(settings: Settings, version: str, stages: str | None = None) -> Rollout:
    async with connected(settings.redis_dsn) as client:
        registry = model_registry(settings)
        return await Rollouts(client, settings, registry).start(version, stages=stages)


def _spike(settings: Settings) -> list[str]:
    """A whole short spike; what it told the user."""
    said: list[str] = []
    asyncio.run(run_spike(settings, asyncio.Event(), at_s=0.0, for_s=0.1, say=said.append))
    return said


def test_the_spike_skips_the_shadow_stage_of_the_configured_ones() -> None:
    assert hurried_stages(Settings()) == "10,50,100"
    assert hurried_stages(Settings(rollout_stages="shadow,5,25,100")) == "5,25,100"
    assert hurried_stages(Settings(rollout_stages="20,100")) == "20,100"


def test_the_spike_is_rolled_out_straight_to_a_canary_stage_and_aborted_when_it_ends(
    settings: Settings, redis_client: redis.Redis
) -> None:
    assert _spike(settings) == []
    rollout, runs, current = asyncio.run(_state(settings))
    base = Manifest.read(settings.model_dir)
    assert rollout is not None and [run.run_id for run in runs] == [rollout.run_id]
    assert rollout.candidate.version == settings.spike_model_version
    assert rollout.incumbent.version == base.version
    # Its only stage was the first that exposes users; the analysis had not caught it in
    # a tenth of a second (no worker runs here), so its end aborted it.
    assert rollout.stages == ["10", "50", "100"]
    assert [(r.stage, r.outcome) for r in rollout.history] == [("10", "aborted")]
    assert rollout.status == "aborted" and rollout.settled
    assert rollout.reason == "the demo's spike ended before the analysis caught it"
    # The pointer never moved to the spike: the model in service is the configured one,
    # registered by the rollout so that a rollback has a model to return to.
    assert current == base.version
    registry = model_registry(settings)
    assert {m.version for m in registry.versions()} == {base.version, settings.spike_model_version}


def test_a_spike_is_refused_while_another_rollout_runs(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel
) -> None:
    model_registry(settings).add(make_model_dir("1.1.0"))
    other = asyncio.run(_start(settings, "1.1.0"))
    said = _spike(settings)
    assert len(said) == 1 and said[0].startswith(f"SPIKE not started: rollout {other.run_id}")
    rollout, _, _ = asyncio.run(_state(settings))
    assert rollout is not None and rollout.run_id == other.run_id and rollout.status == "running"


def test_a_spike_rollout_left_by_a_stopped_demo_is_aborted_first(
    settings: Settings, redis_client: redis.Redis
) -> None:
    registry = model_registry(settings)
    register_spike_model(
        registry,
        default_model_dir(),
        version=settings.spike_model_version,
        threshold=settings.spike_threshold,
    )
    left = asyncio.run(_start(settings, settings.spike_model_version, "10,100"))
    assert _spike(settings) == []
    _, runs, _ = asyncio.run(_state(settings))
    assert [(run.run_id == left.run_id, run.status, run.reason) for run in runs] == [
        (False, "aborted", "the demo's spike ended before the analysis caught it"),
        (True, "aborted", "a spike left running by a stopped demo"),
    ]


def test_the_spikes_end_leaves_a_later_rollout_alone(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel
) -> None:
    model_registry(settings).add(make_model_dir("1.1.0"))

    async def scenario() -> Rollout | None:
        stop = asyncio.Event()
        spike = asyncio.create_task(run_spike(settings, stop, at_s=0.0, for_s=600.0))
        async with connected(settings.redis_dsn) as client:
            rollouts = Rollouts(client, settings, model_registry(settings))
            for _ in range(1_000):  # until the spike's rollout has started
                if await rollouts.status() is not None:
                    break
                await asyncio.sleep(0.05)
            # Ended meanwhile (as the analysis ends it), and another rollout started.
            await rollouts.abort("caught")
            await rollouts.start("1.1.0")
            stop.set()
            await spike
            return await rollouts.status()

    rollout = asyncio.run(scenario())
    assert rollout is not None and rollout.candidate.version == "1.1.0"
    assert rollout.status == "running"
