"""Suppressions through a rollout, on the session's real Redis: those made before the
candidate's ``trained_through`` stay in force while it is only part of the traffic, expire
when it reaches 100 %, and come back when it is rolled back from there."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import redis

from l2loop.release.rollout import Rollouts
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import connected
from l2model.registry import ModelPointer
from tests.fixtures.curated import NOON, curated_example
from tests.fixtures.models import MakeModel


def test_suppressions_expire_at_100_and_come_back_on_rollback(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel
) -> None:
    registry = model_registry(settings)
    registry.add(make_model_dir("1.0.0"))
    registry.add(make_model_dir("1.1.0"), trained_through=NOON + timedelta(days=1))
    learnt = curated_example("early question about bash loops", reporters=3)
    newer = curated_example(
        "late question about bash traps", reporters=3, curated_at=NOON + timedelta(days=2)
    )

    async def scenario() -> list[tuple[str, str | None, list[str]]]:
        async with connected(settings.redis_dsn) as client:
            store = SuppressionStore(client, key_prefix=settings.topic_prefix)
            pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
            await pointer.promote(registry, "1.0.0")
            await store.create_from([learnt, newer], quorum=3)
            rollouts = Rollouts(client, settings, registry)
            seen = []

            async def look(step: str) -> None:
                current = await pointer.current()
                active = sorted(item.preview or "" for item in await store.active())
                seen.append((step, None if current is None else current.version, active))

            await rollouts.start("1.1.0")
            await look("shadow")
            await rollouts.advance()
            await look("10")
            await rollouts.advance()
            await look("50")
            await rollouts.advance()
            await look("100")
            await rollouts.abort("rolled back by hand after 100")
            await look("aborted")
            return seen

    both = sorted([learnt.text, newer.text])
    assert asyncio.run(scenario()) == [
        ("shadow", "1.0.0", both),
        ("10", "1.0.0", both),
        ("50", "1.0.0", both),
        ("100", "1.1.0", [newer.text]),
        ("aborted", "1.0.0", both),
    ]
