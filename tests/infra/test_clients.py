"""The batch sender on the real broker: every record arrives once, in order per partition,
and each key lands on the partition the producer's own ``send`` picks for it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer

from l2loop.infra.clients import batch_sender, started_producer
from l2loop.infra.topics import SCAN_VERDICTS
from l2loop.settings import Settings


async def read_all(settings: Settings, topic: str, count: int) -> list[tuple[int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[tuple[int, bytes, bytes]] = []
    try:
        while len(found) < count:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for records in batches.values():
                found.extend((r.partition, r.key or b"", r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return found


def test_batches_put_each_key_where_send_would_and_keep_its_order(topics: Settings) -> None:
    async def scenario() -> None:
        topic = topics.topic(SCAN_VERDICTS)
        keyed = [(f"ev-{i}".encode(), f"batched {i}".encode()) for i in range(500)]
        # Over the batch size a partition's batch is split: a big record is sent all the same.
        keyed.append((b"ev-big", b"x" * 200_000))
        async with started_producer(topics) as producer:
            delivery = await batch_sender(producer)(topic, keyed)
            await delivery
            by_send = await asyncio.gather(
                *[await producer.send(topic, b"one by one", key=key) for key, _ in keyed]
            )
        where_send_put = {
            key: meta.partition for (key, _), meta in zip(keyed, by_send, strict=True)
        }
        found = await read_all(topics, topic, 2 * len(keyed))
        batched = [(p, k, v) for p, k, v in found if v != b"one by one"]
        assert sorted((k, v) for _, k, v in batched) == sorted(keyed)
        assert all(where_send_put[k] == p for p, k, _ in batched)
        for partition in {p for p, _, _ in batched}:
            numbers = [int(v.split()[1]) for p, _, v in batched if p == partition and v[:1] == b"b"]
            assert numbers == sorted(numbers)

    asyncio.run(scenario())
