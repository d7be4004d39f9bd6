"""Plain Kafka clients behind ``l2loop produce`` and ``l2loop tail``, and the publish
function every agent that writes to a topic is given."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.partitioner import DefaultPartitioner

from l2loop.settings import Settings

# (topic, key, value) -> awaitable that resolves once the record is buffered and returns the
# delivery future; both aiokafka's and Faust's producers fit behind it.
Publish = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]
# (topic, [(key, value), ...]) -> awaitable that resolves once the records are buffered and
# returns the future of all their deliveries.
PublishMany = Callable[[str, Sequence[tuple[bytes | None, bytes]]], Awaitable[Awaitable[Any]]]


def record_key(line: bytes) -> bytes | None:
    """The event id as key when the line is a JSON object that has one; else no key."""
    with contextlib.suppress(orjson.JSONDecodeError):
        payload = orjson.loads(line)
        if isinstance(payload, dict) and isinstance(payload.get("event_id"), str):
            return str(payload["event_id"]).encode()
    return None


async def produce_lines(settings: Settings, topic: str, lines: Iterable[bytes]) -> int:
    """Sends each line as one record, as it is: malformed lines are the scorer's to judge."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks="all",
    )
    await producer.start()
    try:
        pending = [await producer.send(topic, line, key=record_key(line)) for line in lines]
        await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def started_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    # acks=all: a write is acknowledged once min.insync.replicas hold it, so losing a leader
    # loses no verdict whose event's offset is already committed.
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def publisher(
    settings: Settings,
) -> AsyncIterator[Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]]:
    """A producer's send, for one session: awaiting it queues a record, awaiting what it
    returns waits for the delivery (the ``Publish`` of the agents)."""
    async with started_producer(settings) as producer:

        async def publish(topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
            delivery: Awaitable[Any] = await producer.send(topic, value, key=key)
            return delivery

        yield publish


def batch_sender(producer: AIOKafkaProducer) -> PublishMany:
    """Sends records a partition's batch at a time, each key to the partition ``send`` would
    pick: the per-record path (a future, a metadata check and a partition lookup for every
    record) cost the score agent a fifth of its event loop."""
    partitioner = DefaultPartitioner()

    async def publish_many(
        topic: str, records: Sequence[tuple[bytes | None, bytes]]
    ) -> Awaitable[Any]:
        if not records:
            return asyncio.gather()
        partitions = sorted(await producer.partitions_for(topic))
        grouped: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        for key, value in records:
            grouped[partitioner(key, partitions, partitions)].append((key, value))
        deliveries = []
        for partition, items in grouped.items():
            batch = producer.create_batch()
            for key, value in items:
                # A full batch refuses the record; a new batch takes any first record.
                if batch.append(key=key, value=value, timestamp=None) is None:
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        return asyncio.gather(*deliveries)

    return publish_many


def decode_value(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", errors="backslashreplace")


def topic_reader(settings: Settings, *topics: str, from_beginning: bool) -> AIOKafkaConsumer:
    """A consumer of every partition of ``topics`` in no group: it reads, commits nothing and
    takes nothing from the loop's own consumers."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )


async def tail_records(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    idle_timeout_s: float | None = None,
) -> AsyncIterator[ConsumerRecord]:
    """Yields records of every partition of ``topic``; stops after ``idle_timeout_s`` of quiet."""
    consumer = topic_reader(settings, topic, from_beginning=from_beginning)
    await consumer.start()
    try:
        while True:
            timeout_ms = int((idle_timeout_s or 1.0) * 1000)
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
            if not batches and idle_timeout_s is not None:
                return
            for records in batches.values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()
