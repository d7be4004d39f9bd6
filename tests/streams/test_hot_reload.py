"""Promotion and rollback while events stream through the real worker and broker."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

from l2loop.infra.topics import SCAN_VERDICTS
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connect
from l2model.contract import Manifest
from l2model.registry import ModelPointer
from tests.fixtures.models import MakeModel
from tests.fixtures.pipeline import (
    WorkerProcess,
    count_verdicts_until,
    drain,
    make_traffic,
    send_paced,
)


def test_promotion_and_rollback_switch_versions_without_loss_or_rescoring(
    topics: Settings, make_model_dir: MakeModel
) -> None:
    registry = model_registry(topics)
    registry.add(make_model_dir("1.0.0"))
    # Same weights, another threshold: which model scored an event shows in its verdict.
    registry.add(make_model_dir("1.1.0", threshold=0.9), changes=["stricter threshold"])
    # 18 s of traffic: a slow machine's start and readers still leave seconds of it after the
    # rollback, for the rolled-back model to score.
    total = 9_000
    values, _ = make_traffic(total, 0, seed=21)
    worker = WorkerProcess(topics, topics.data_dir / "worker.log")

    async def scenario() -> tuple[datetime, datetime]:
        client = connect(topics.redis_dsn)
        pointer = ModelPointer(client, key_prefix=topics.topic_prefix)
        await pointer.promote(registry, "1.0.0")
        worker.start()
        sending = asyncio.create_task(send_paced(topics, values, per_second=500))
        await count_verdicts_until(topics, 1_000)
        promoted_at = (await pointer.promote(registry, "1.1.0")).promoted_at
        await count_verdicts_until(topics, 1_000, version="1.1.0")
        rolled_back_at = datetime.now(tz=UTC)
        assert (await pointer.rollback()).version == "1.0.0"
        await sending
        await client.aclose()
        return promoted_at, rolled_back_at

    try:
        promoted_at, rolled_back_at = asyncio.run(scenario())
        verdicts_topic = topics.topic(SCAN_VERDICTS)
        drained = drain(topics, [verdicts_topic], lambda d: len(d.values(verdicts_topic)) >= total)
    finally:
        worker.stop()
    verdicts = sorted(drained.values(verdicts_topic), key=lambda v: v["scored_at"])

    assert len(verdicts) == total
    assert {v["event_id"] for v in verdicts} == {f"ev-21-{i:06d}" for i in range(total)}
    thresholds = {"1.0.0": Manifest.read(registry.path("1.0.0")).threshold, "1.1.0": 0.9}
    assert all(v["threshold"] == thresholds[v["model_version"]] for v in verdicts)
    switches = [
        b for a, b in itertools.pairwise(verdicts) if a["model_version"] != b["model_version"]
    ]
    assert [v["model_version"] for v in verdicts[:1] + switches] == ["1.0.0", "1.1.0", "1.0.0"]
    took = [
        (datetime.fromisoformat(v["scored_at"]) - moment).total_seconds()
        for v, moment in zip(switches, (promoted_at, rolled_back_at), strict=True)
    ]
    print(f"\nnew model scoring {took[0]:.2f}s after promote, {took[1]:.2f}s after rollback")
    assert all(0 < seconds < 10 * topics.model_poll_s for seconds in took)
