"""The curated sink's batch step, in process against the real Redis: decoding is total, a
replayed batch changes nothing, and only confirmed FPs become suppressions."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from l2loop.infra.embedded import free_port, seaweedfs_process
from l2loop.resilience import DEFAULT_BACKOFF, HEALTH, Backoff
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.dead_letters import DeadLetter
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import connect
from l2loop.streams.curated_sink import CuratedSink, SinkOutcome, decode_curated_example
from l2loop.streams.scoring import RawRecord
from l2model.storage import ObjectStorage, S3Config, Storage
from tests.fixtures.curated import NOON, curated_example, stored_lines

CONFIRMED = curated_example("How do I bypass the cache in curl?", reporters=3)
LONE = curated_example("How do I bypass a proxy for localhost in pip?", reporters=1)


def record(value: bytes | None, offset: int) -> RawRecord:
    return RawRecord("l2.curated-examples", 0, offset, None, value)


BAD = {
    b"": "empty_message",
    b"{not json": "invalid_json",
    b"[1, 2]": "not_an_object",
    orjson.dumps({"text": "only a text"}): "missing_field",
    to_bytes(CONFIRMED)[:-1] + b', "surprise": 1}': "unknown_field",
    orjson.dumps(CONFIRMED.model_dump(mode="json") | {"reporter_count": 0}): "invalid_value",
}


@pytest.mark.parametrize(("value", "reason"), list(BAD.items()))
def test_decoding_is_total(value: bytes, reason: str) -> None:
    decoded = decode_curated_example(record(value, 7))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == reason
    assert decoded.offset == 7 and decoded.raw == value


def sink_on(
    storage: Storage, client: aioredis.Redis, settings: Settings, backoff: Backoff = DEFAULT_BACKOFF
) -> CuratedSink:
    return CuratedSink(
        CuratedStore(storage),
        SuppressionStore(client, key_prefix=settings.topic_prefix),
        ThreadPoolExecutor(max_workers=1),
        quorum=3,
        backoff=backoff,
    )


def test_a_replayed_batch_writes_and_suppresses_nothing_new(
    settings: Settings, redis_client: redis.Redis, storage: Storage
) -> None:
    later = curated_example(CONFIRMED.text, reporters=4, curated_at=NOON + timedelta(minutes=3))
    good = [to_bytes(example) for example in (LONE, CONFIRMED, later)]
    batch = [record(value, i) for i, value in enumerate([*BAD, *good])]

    async def run_twice() -> tuple[SinkOutcome, SinkOutcome]:
        client = connect(settings.redis_dsn)
        sink = sink_on(storage, client, settings)
        try:
            return await sink.store_batch(batch), await sink.store_batch(batch)
        finally:
            await client.aclose()

    first, replay = asyncio.run(run_twice())
    assert (first.written, first.duplicates) == (3, 0)
    assert sorted(letter.reason.value for letter in first.unreadable) == sorted(BAD.values())
    assert [item.text_key for item in first.suppressions] == [CONFIRMED.example_id]
    assert (replay.written, replay.duplicates, replay.suppressions) == (0, 3, [])
    assert len(stored_lines(CuratedStore(storage))) == 3


def test_a_store_that_does_not_answer_holds_the_batch_until_it_does(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A real S3 server that is not there yet when the batch arrives: the sink waits it out
    (health says so) and stores the batch once it answers, losing nothing."""
    port = free_port()
    storage = ObjectStorage(
        S3Config(url="s3://late", endpoint=f"http://127.0.0.1:{port}", unsigned=True)
    )
    batch = [record(to_bytes(example), i) for i, example in enumerate((LONE, CONFIRMED))]
    server = seaweedfs_process(port, tmp_path, bucket="late")
    outages: list[str] = []

    async def store_while_it_comes_up() -> SinkOutcome:
        client = connect(settings.redis_dsn)
        sink = sink_on(storage, client, settings, Backoff(initial_s=0.2, cap_s=1.0))
        try:
            storing = asyncio.create_task(sink.store_batch(batch))
            for _ in range(300):
                if any(d.dependency == "store" and not d.up for d in HEALTH.report().dependencies):
                    outages.append("store")
                    break
                await asyncio.sleep(0.1)
            assert not storing.done()
            # Started from this, the main, thread (a child dies with the thread that forked it).
            server.start()
            return await asyncio.wait_for(storing, 60)
        finally:
            await client.aclose()

    try:
        outcome = asyncio.run(store_while_it_comes_up())
    finally:
        server.stop()
    assert outages == ["store"]
    assert (outcome.written, outcome.duplicates) == (2, 0)
    assert [d.up for d in HEALTH.report().dependencies if d.dependency == "store"] == [True]
