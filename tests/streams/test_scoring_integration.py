"""The score agent at volume on the real broker and Redis: nothing lost, nothing invented."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from typing import Any

import redis
from aiokafka import AIOKafkaProducer

from l2loop.clients import produce_lines, tail_records
from l2loop.settings import Settings
from schemas.verdicts import StoredVerdict
from streams.topics import SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS
from tests.fixtures.pipeline import WorkerProcess, drain
from workers.demo_traffic import demo_prompts, malformed_event, scan_event

TOTAL, MALFORMED_COUNT = 10_000, 500


def make_traffic(total: int, malformed: int, seed: int) -> tuple[list[bytes], dict[bytes, str]]:
    """``total`` records, ``malformed`` of them bad in every known way, at random positions."""
    rng = random.Random(seed)
    prompts = demo_prompts()
    bad_positions = set(rng.sample(range(total), malformed))
    values: list[bytes] = []
    expected_reasons: dict[bytes, str] = {}
    for i in range(total):
        event_id = f"ev-{seed}-{i:06d}"
        if i in bad_positions:
            reason, value = malformed_event(len(expected_reasons), event_id)
            expected_reasons[value] = reason.value
        else:
            value = scan_event(rng, event_id, rng.choice(prompts), canary_share=0.05)
        values.append(value)
    return values, expected_reasons


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
        producing = asyncio.create_task(_paced(topics, values, per_second=1_000))
        seen_before_kill = await _count_until(topics, verdicts_topic, at_least=2_000)
        worker.kill()
        killed_while_producing = not producing.done()
        worker.start()
        await producing
        assert killed_while_producing
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


async def _count_until(settings: Settings, topic: str, at_least: int) -> int:
    seen = 0
    async for _ in tail_records(settings, topic, from_beginning=True):
        seen += 1
        if seen >= at_least:
            return seen
    return seen


async def _paced(settings: Settings, values: list[bytes], per_second: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        step = per_second // 10
        for start in range(0, len(values), step):
            began = time.monotonic()
            for value in values[start : start + step]:
                await producer.send(settings.topic(SCAN_EVENTS), value)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
    finally:
        await producer.stop()
