"""The score agent at volume on the real broker and Redis: nothing lost, nothing invented."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import redis

from l2loop.infra.clients import produce_lines
from l2loop.infra.topics import SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS
from l2loop.schemas.verdicts import StoredVerdict
from l2loop.settings import Settings
from tests.fixtures.pipeline import (
    WorkerProcess,
    count_verdicts_until,
    drain,
    make_traffic,
    send_paced,
)

TOTAL, MALFORMED_COUNT = 10_000, 500


def test_ten_thousand_events_with_five_hundred_malformed(
    worker: WorkerProcess, topics: Settings, redis_client: redis.Redis
) -> None:
    values, expected_reasons = make_traffic(TOTAL, MALFORMED_COUNT, seed=11)
    asyncio.run(produce_lines(topics, topics.topic(SCAN_EVENTS), values))
    verdicts_topic, dlq_topic = topics.topic(SCAN_VERDICTS), topics.topic(SCAN_EVENTS_DLQ)

    drained = drain(
        topics,
        [verdicts_topic, dlq_topic],
        lambda d: len(d.values(verdicts_topic)) + len(d.values(dlq_topic)) >= TOTAL,
        timeout_s=240,
    )
    verdicts, dead = drained.values(verdicts_topic), drained.values(dlq_topic)
    assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]

    # in = out + dead-lettered, with no duplicate and no stranger on either side
    assert len(verdicts) == TOTAL - MALFORMED_COUNT
    assert len(dead) == MALFORMED_COUNT
    valid_ids = {f"ev-11-{i:06d}" for i in range(TOTAL)} - {
        letter["event_id"] for letter in dead if letter["event_id"]
    }
    assert {v["event_id"] for v in verdicts} <= valid_ids
    assert len({v["event_id"] for v in verdicts}) == len(verdicts)

    # each dead letter carries the raw bytes, where they came from, and the right reason
    for letter in dead:
        raw = base64.urlsafe_b64decode(letter["raw"])
        assert letter["reason"] == expected_reasons[raw], letter["error"]
        assert letter["source_topic"] == topics.topic(SCAN_EVENTS)
        assert 0 <= letter["partition"] < topics.partitions and letter["offset"] >= 0
    assert len({(d["partition"], d["offset"]) for d in dead}) == MALFORMED_COUNT

    # every flagged verdict can be joined from Redis
    flagged: list[dict[str, Any]] = [v for v in verdicts if v["is_threat"]]
    assert flagged, "the demo traffic holds threats, so some verdicts must be flagged"
    keys = [f"{topics.topic_prefix}verdict:{v['event_id']}" for v in flagged]
    stored = redis_client.mget(keys)
    assert all(item is not None for item in stored)
    for verdict, item in zip(flagged, stored, strict=True):
        assert StoredVerdict.model_validate_json(item).verdict.event_id == verdict["event_id"]


def test_worker_killed_mid_stream_leaves_no_event_unscored(topics: Settings) -> None:
    """SIGKILL while events flow, start again: at-least-once, and the duplicates counted."""
    total = 8_000
    values, _ = make_traffic(total, 0, seed=12)
    worker = WorkerProcess(topics, topics.data_dir / "worker.log")
    verdicts_topic = topics.topic(SCAN_VERDICTS)
    worker.start()

    async def stream_and_kill() -> int:
        producing = asyncio.create_task(send_paced(topics, values, per_second=1_000))
        # A quarter scored: the kill lands mid-stream however long the worker took to start.
        seen_before_kill = await count_verdicts_until(topics, at_least=total // 4)
        worker.kill()
        worker.start()
        await producing
        return seen_before_kill

    try:
        seen_before_kill = asyncio.run(stream_and_kill())
        drained = drain(
            topics,
            [verdicts_topic],
            lambda d: len({v["event_id"] for v in d.values(verdicts_topic)}) >= total,
            timeout_s=180,
        )
    finally:
        worker.stop()
    verdicts = drained.values(verdicts_topic)
    unique = {v["event_id"] for v in verdicts}
    duplicates = len(verdicts) - len(unique)
    print(
        f"\nrestart: {total} events, {seen_before_kill} verdicts before SIGKILL, "
        f"{len(verdicts)} verdicts in all, {duplicates} duplicates"
    )
    assert worker.starts == 2 and 0 < seen_before_kill < total
    assert unique == {f"ev-12-{i:06d}" for i in range(total)}
