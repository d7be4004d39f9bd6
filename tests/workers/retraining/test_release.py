"""How a retraining run releases an accepted candidate, on the real Redis: a rollout starts,
or (``immediate``) the pointer moves at once; a rollout that cannot start is reported."""

from __future__ import annotations

import asyncio

import pytest
import redis

from l2loop.settings import Settings
from l2loop.stores.rollout import RolloutStore
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connected
from l2loop.workers.retraining.release import Release, release
from l2model.registry import ModelPointer, ModelRegistry
from tests.fixtures.models import MakeModel


def _registered(settings: Settings, make_model_dir: MakeModel, *versions: str) -> ModelRegistry:
    registry = model_registry(settings)
    for version in versions:
        registry.add(make_model_dir(version))
    return registry


def test_a_second_candidate_while_a_rollout_runs_is_reported_not_raised(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel
) -> None:
    registry = _registered(settings, make_model_dir, "1.1.0", "1.2.0")

    async def scenario() -> tuple[Release, Release, str | None]:
        first = await release(settings, registry, "1.1.0")
        second = await release(settings, registry, "1.2.0")
        async with connected(settings.redis_dsn) as client:
            state = await RolloutStore(client, key_prefix=settings.topic_prefix).get()
        return first, second, None if state is None else state.run_id

    first, second, running = asyncio.run(scenario())
    assert first.how == "rollout" and first.stages == ["shadow", "10", "50", "100"]
    assert first.summary() == f"rollout {first.run_id} started (shadow,10,50,100)"
    # The running rollout is left alone, and the refusal names it.
    assert running == first.run_id
    assert second.how == "refused" and second.reason is not None
    assert first.run_id in second.reason and "1.1.0" in second.reason
    assert second.summary() == f"rollout not started: {second.reason}"


@pytest.mark.parametrize("stages", ["shadow,10,50,100", "25,100"])
def test_a_rollout_starts_at_the_first_configured_stage(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel, stages: str
) -> None:
    registry = _registered(settings, make_model_dir, "1.1.0")
    released = asyncio.run(
        release(settings.model_copy(update={"rollout_stages": stages}), registry, "1.1.0")
    )
    assert released.stages == stages.split(",")


def test_immediate_promotion_moves_the_pointer_and_starts_no_rollout(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel
) -> None:
    registry = _registered(settings, make_model_dir, "1.1.0")
    immediate = settings.model_copy(update={"promotion": "immediate"})

    async def scenario() -> tuple[Release, str | None, bool]:
        released = await release(immediate, registry, "1.1.0")
        async with connected(settings.redis_dsn) as client:
            current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
            state = await RolloutStore(client, key_prefix=settings.topic_prefix).get()
        return released, None if current is None else current.version, state is None

    released, current, no_rollout = asyncio.run(scenario())
    assert released == Release(how="promoted", suppressions_expired=0)
    assert released.summary() == "promoted"
    assert current == "1.1.0" and no_rollout
