"""The score agent's own consumer on the real broker: batches in flight commit in the order
they were read, a new group starts where the group before it committed, and a rebalance
commits what finished."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from l2loop.infra.topics import SCAN_EVENTS
from l2loop.schemas.decoding import RawRecord
from l2loop.settings import Settings
from l2loop.streams.consumer import BatchConsumer, Previous, consumer_group

PARTITIONS = 4


async def produce(settings: Settings, count: int, *, start: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        topic = settings.topic(SCAN_EVENTS)
        await asyncio.gather(
            *[
                await producer.send(topic, f"{i}".encode(), partition=i % PARTITIONS)
                for i in range(start, start + count)
            ]
        )
    finally:
        await producer.stop()


async def committed(settings: Settings, group: str) -> dict[int, int | None]:
    """The group's committed offset per partition, read by a member that never joins it."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await reader.start()
    try:
        topic = settings.topic(SCAN_EVENTS)
        return {p: await reader.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await reader.stop()


def batch_consumer(settings: Settings, **kwargs: object) -> BatchConsumer:
    return BatchConsumer(
        settings,
        [settings.topic(SCAN_EVENTS)],
        group_id=consumer_group(settings, "score"),
        batch_size=8,
        within_s=0.02,
        **kwargs,  # type: ignore[arg-type]
    )


async def until(condition: object, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_held_batch_holds_the_commits_of_the_batches_read_after_it(topics: Settings) -> None:
    async def scenario() -> None:
        await produce(topics, 40)
        consumer = batch_consumer(topics)
        release = asyncio.Event()
        seen: list[RawRecord] = []
        batches = 0

        finished: list[int] = []

        async def process(records: Sequence[RawRecord], previous: Previous) -> None:
            nonlocal batches
            batches += 1
            number = batches
            seen.extend(records)
            if number == 1:
                await release.wait()
            # What must keep the read order waits for the batch before.
            await previous()
            finished.append(number)

        running = asyncio.create_task(consumer.run(process))
        try:
            # The second batch finished while the first is held: nothing may be committed,
            # or a crash now would skip the first batch's records.
            await until(lambda: batches >= 2)
            await asyncio.sleep(0.5)
            group = consumer_group(topics, "score")
            assert all(offset is None for offset in (await committed(topics, group)).values())
            release.set()
            await until(lambda: len(seen) >= 40)
            await asyncio.sleep(0.5)
            assert await committed(topics, group) == dict.fromkeys(range(PARTITIONS), 10)
        finally:
            await stopped(running)
        assert sorted(int(r.value or b"") for r in seen) == list(range(40))
        assert finished == sorted(finished)

    asyncio.run(scenario())


def test_a_new_group_starts_where_the_group_before_it_committed(topics: Settings) -> None:
    async def scenario() -> None:
        await produce(topics, 20)
        topic = topics.topic(SCAN_EVENTS)
        # The group that read the topic before (Faust's, the app id) had read 3 per partition.
        before = AIOKafkaConsumer(
            bootstrap_servers=topics.bootstrap_servers,
            group_id=topics.app_id,
            enable_auto_commit=False,
        )
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        before.assign(partitions)
        await before.start()
        try:
            await before.commit(dict.fromkeys(partitions, 3))
        finally:
            await before.stop()
        consumer = batch_consumer(topics, carry_from=topics.app_id)
        seen: list[int] = []

        async def process(records: Sequence[RawRecord], previous: Previous) -> None:
            seen.extend(int(r.value or b"") for r in records)

        running = asyncio.create_task(consumer.run(process))
        try:
            await until(lambda: len(seen) >= 8)
            await asyncio.sleep(1.0)
        finally:
            await stopped(running)
        # Records 0-11 (three per partition) were the old group's; only the rest are read.
        assert sorted(seen) == list(range(12, 20))

    asyncio.run(scenario())


def test_a_second_member_takes_partitions_and_nothing_is_read_twice_or_lost(
    topics: Settings,
) -> None:
    async def scenario() -> None:
        seen: list[int] = []

        async def process(records: Sequence[RawRecord], previous: Previous) -> None:
            await asyncio.sleep(0.05)
            seen.extend(int(r.value or b"") for r in records)

        first = asyncio.create_task(batch_consumer(topics).run(process))
        second: asyncio.Task[None] | None = None
        try:
            await produce(topics, 200)
            await until(lambda: len(seen) >= 40)
            # The rebalance drains and commits the first member's batches in flight.
            second = asyncio.create_task(batch_consumer(topics).run(process))
            await produce(topics, 200, start=200)
            await until(lambda: len(set(seen)) >= 400, timeout_s=60)
            await asyncio.sleep(1.0)
        finally:
            await stopped(first)
            if second is not None:
                await stopped(second)
        assert sorted(set(seen)) == list(range(400))
        assert len(seen) == 400

    asyncio.run(scenario())
