"""Honest FP reports end to end, on the real broker, Redis and ``l2loop worker`` processes.

100 flagged benign programming questions arrive on curated-examples as the report agent
emits them (revisions as reporters confirm; some released in review; some never confirmed).
The worker stores them; the broker is then replaced by a fresh, empty one: the store still
has them, a replay of the topic adds nothing, and when the same prompts are sent again as
scan events, the confirmed ones are allowed as suppressed with the model's own score.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from l2loop.infra.embedded import embedded_services
from l2loop.infra.topics import SCAN_EVENTS, SCAN_VERDICTS, ensure_topics
from l2loop.schemas.reports import CuratedExample
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2model.record import text_key
from l2model.runtime import L2Model
from l2model.storage import LocalStorage
from tests.fixtures.curated import (
    NOON,
    REPORTING_TENANT,
    curated_example,
    programming_questions,
    revisions_of,
    send_curated,
    stored_lines,
)
from tests.fixtures.models import MakeModel
from tests.fixtures.pipeline import WorkerProcess, drain, wait_for

TENANT = REPORTING_TENANT


async def send_scan_events(settings: Settings, texts: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        pending = []
        for i, text in enumerate(texts):
            event = {"event_id": f"again-{i}", "ts": int(time.time() * 1000), "tenant_id": TENANT}
            value = orjson.dumps(event | {"text": text})
            pending.append(await producer.send(settings.topic(SCAN_EVENTS), value))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def stored_payloads(store: CuratedStore) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stored_lines(store)]


def test_honest_fp_reports_are_kept_across_a_broker_restart_and_relieve_the_tenant(
    topics: Settings, redis_client: redis.Redis, make_model_dir: MakeModel, tmp_path: Path
) -> None:
    # A strict model flags every one of these benign questions: the false positives to fix.
    strict = topics.model_copy(
        update={"model_dir": make_model_dir("1.0.0", threshold=0.0001), "suppression_quorum": 3}
    )
    questions = programming_questions()
    emitted = [revision for i, text in enumerate(questions) for revision in revisions_of(i, text)]
    confirmed = {text for i, text in enumerate(questions) if i % 10 < 7}
    store = CuratedStore(LocalStorage(strict.data_dir))
    active_key = f"{strict.topic_prefix}suppressions:active"

    # The report agent's own replays: the first 20 records a second time.
    asyncio.run(send_curated(strict, emitted + emitted[:20]))
    worker = WorkerProcess(strict, strict.data_dir / "worker-1.log")
    worker.start()
    try:
        wait_for("storing", lambda: len(stored_payloads(store)) >= len(emitted), worker, 120)
        wait_for("suppressing", lambda: redis_client.hlen(active_key) >= 70, worker, 30)
    finally:
        worker.stop()

    lines = stored_payloads(store)
    assert len(lines) == len(emitted) == 230
    assert {line["text"] for line in lines} == set(questions)
    assert all(line["weight_multiplier"] == 5.0 and line["label"] == 0 for line in lines)
    latest: dict[str, dict[str, object]] = {}
    for line in lines:
        latest[str(line["example_id"])] = line
    assert len(latest) == 100
    for i, text in enumerate(questions):
        assert latest[text_key(text)]["reporter_count"] == revisions_of(i, text)[-1].reporter_count
    suppressed_keys = {key.decode() for key in redis_client.hkeys(active_key)}
    assert suppressed_keys == {f"{TENANT}|{text_key(text)}" for text in confirmed}

    # A fresh broker: nothing of the old topics is left; the store and Redis are.
    with embedded_services(tmp_path / "second-broker", redis=False) as second:
        moved = strict.model_copy(update={"kafka_broker": second.kafka_broker})
        asyncio.run(ensure_topics(moved))
        day = NOON.date()

        def order(example: CuratedExample) -> tuple[str, int, str]:
            return example.example_id, example.reporter_count, example.source

        read_back = sorted(store.read(day, day + timedelta(days=1)), key=order)
        assert read_back == sorted(emitted, key=order)

        worker = WorkerProcess(moved, strict.data_dir / "worker-2.log")
        worker.start()
        try:
            # The whole topic replayed into the new broker, then one new example per
            # partition: once those are stored, every replayed record before them was seen.
            asyncio.run(send_curated(moved, emitted))
            sentinels = [
                curated_example(f"Sentinel question {p}: how do I pin a Docker image?")
                for p in range(moved.partitions)
            ]
            for partition, sentinel in enumerate(sentinels):
                asyncio.run(send_curated(moved, [sentinel], partition=partition))
            wait_for(
                "storing the sentinels",
                lambda: len(stored_payloads(store)) >= len(emitted) + len(sentinels),
                worker,
                120,
            )
            assert len(stored_payloads(store)) == len(emitted) + len(sentinels)

            asyncio.run(send_scan_events(moved, questions))
            verdicts_topic = moved.topic(SCAN_VERDICTS)
            drained = drain(
                moved, [verdicts_topic], lambda d: len(d.values(verdicts_topic)) >= 100, 120
            )
        finally:
            worker.stop()

    verdicts = {str(v["event_id"]): v for v in drained.values(verdicts_topic)}
    assert len(verdicts) == 100
    model = L2Model.load(strict.model_dir)
    scores = model.score_batch(questions)
    for i, (text, expected) in enumerate(zip(questions, scores, strict=True)):
        verdict = verdicts[f"again-{i}"]
        assert verdict["is_threat"] is True
        assert verdict["score"] == pytest.approx(expected.score, abs=1e-6)
        if text in confirmed:
            assert (verdict["action"], verdict["suppressed"]) == ("allow", True), text
        else:
            assert verdict["action"] in ("warn", "block") and verdict["suppressed"] is False
