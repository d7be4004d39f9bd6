"""The Redis window state on a real Redis: applied once, whoever applies and how often."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import redis

from l2loop.resilience import Backoff
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.verdicts import Verdict
from l2loop.schemas.windows import WindowStats
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2loop.streams.window_store import RedisWindowState, latest_key
from l2loop.streams.windows import WindowAggregator
from tests.fixtures.window_records import (
    CONFIG,
    TOPICS,
    MemoryWindowState,
    at,
    dead_letter,
    raw,
    verdict,
    verdict_records,
)

T = TypeVar("T")


def with_states(settings: Settings, n: int, body: Callable[..., Awaitable[T]]) -> T:
    """Runs ``body(*aggregators, states)`` with ``n`` aggregators, each on its own client."""

    async def run() -> T:
        states = [
            RedisWindowState(
                connect(settings.redis_dsn),
                key_prefix=settings.topic_prefix,
                window_ttl_s=3600,
                dedupe_ttl_s=3600,
            )
            for _ in range(n)
        ]
        try:
            aggregators = [WindowAggregator(s, CONFIG, TOPICS, Backoff()) for s in states]
            return await body(*aggregators, states)
        finally:
            for state in states:
                await state.close()

    return asyncio.run(run())


def latest(redis_client: redis.Redis, settings: Settings) -> dict[str, WindowStats]:
    return {
        (name.decode() if isinstance(name, bytes) else name): WindowStats.model_validate_json(value)
        for name, value in redis_client.hgetall(latest_key(settings.topic_prefix)).items()
    }


def test_same_batch_applied_twice_counts_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    records = verdict_records([verdict(f"e{i}", at(10), flagged=i < 3) for i in range(50)])
    records += [raw(TOPICS.dead_letters, 2, 0, to_bytes(dead_letter(at(10), 0)))]

    async def twice(aggregator: WindowAggregator, states: list[RedisWindowState]) -> None:
        await aggregator.apply(records)
        await aggregator.apply(records)

    with_states(settings, 1, twice)
    windows = latest(redis_client, settings)
    start = int(at(10).timestamp())
    assert set(windows) == {f"{start}|1.0.0"}  # the contract: "{window start}|{version}"
    w = windows[f"{start}|1.0.0"]
    assert (w.events, w.flagged, w.dead_letters, w.revision) == (50, 3, 1, 1)
    assert w.error_rate.total == 50 and w.model_latency_ms.count == 50


def test_concurrent_appliers_count_each_record_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Three appliers, overlapping batches of four partitions, in random order at once."""
    rng = random.Random(5)
    per_partition = 300
    partitions = {
        p: verdict_records(
            [
                verdict(
                    f"p{p}-{i}",
                    at(rng.uniform(0, 6)) + timedelta(hours=i // 60),
                    flagged=rng.random() < 0.2,
                )
                for i in range(per_partition)
            ],
            partition=p,
        )
        for p in range(4)
    }

    def batches() -> list[list[RawRecord]]:
        # Every applier walks every partition with its own, overlapping cuts.
        out = []
        for records in partitions.values():
            lo = 0
            while lo < len(records):
                hi = min(len(records), lo + rng.randint(5, 60))
                out.append(records[max(0, lo - rng.randint(0, 20)) : hi])
                lo = hi
        return out

    async def race(*args: WindowAggregator | list[RedisWindowState]) -> None:
        aggregators = [a for a in args if isinstance(a, WindowAggregator)]

        async def walk(aggregator: WindowAggregator) -> None:
            for batch in batches():
                await aggregator.apply(batch)

        await asyncio.gather(*(walk(a) for a in aggregators))

    with_states(settings, 3, race)
    expected: dict[int, tuple[int, int]] = {}
    for records in partitions.values():
        for record in records:
            v = Verdict.model_validate_json(record.value or b"")
            hour = int((v.ts - at(0)).total_seconds()) // 3600
            events, flagged = expected.get(hour, (0, 0))
            expected[hour] = (events + 1, flagged + v.is_threat)
    got = {
        (int(w.window_start.timestamp()) - int(at(0).timestamp())) // 3600: (w.events, w.flagged)
        for w in latest(redis_client, settings).values()
    }
    assert got == expected
    assert sum(e for e, _ in got.values()) == 4 * per_partition


def test_hour_without_verdicts_shows_under_none_until_a_version_comes(
    settings: Settings, redis_client: redis.Redis
) -> None:
    start = int(at(8).timestamp())

    async def letters_then_verdict(aggregator: WindowAggregator, _: object) -> None:
        await aggregator.apply([raw(TOPICS.dead_letters, 0, 0, to_bytes(dead_letter(at(8), 0)))])
        assert set(latest(redis_client, settings)) == {f"{start}|none"}
        await aggregator.apply(verdict_records([verdict("e", at(8))]))

    with_states(settings, 1, letters_then_verdict)
    windows = latest(redis_client, settings)
    assert set(windows) == {f"{start}|1.0.0"}
    assert windows[f"{start}|1.0.0"].dead_letters == 1


def test_an_older_revision_never_replaces_a_newer_one(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def late_save(aggregator: WindowAggregator, states: list[RedisWindowState]) -> None:
        (older,) = await aggregator.apply(verdict_records([verdict("a", at(1))]))
        (newer,) = await aggregator.apply(verdict_records([verdict("b", at(1))], first=1))
        assert (older.revision, newer.revision) == (1, 2)
        await states[0].save_latest([older])  # a slow worker, late with revision 1

    with_states(settings, 1, late_save)
    (window,) = latest(redis_client, settings).values()
    assert (window.revision, window.events) == (2, 2)


def test_a_large_batch_with_duplicates_counts_as_the_reference_does(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """More members than the script adds in one call, records of many shapes (flags,
    latencies, hours), and rescored duplicates in the same batch: the script counts each
    event once, with its first copy, as the in-memory reference does."""
    rng = random.Random(11)
    firsts = [
        verdict(
            f"e{i}",
            at(rng.uniform(0, 2)),
            flagged=rng.random() < 0.3,
            model_ms=rng.choice((0.5, 1.0, 4.0)),
        )
        for i in range(2_400)
    ]
    rescored = [
        verdict(v.event_id, v.ts, flagged=not v.is_threat, model_ms=9.0)
        for v in rng.sample(firsts, 300)
    ]
    records = verdict_records(firsts + rescored)

    async def once(aggregator: WindowAggregator, states: list[RedisWindowState]) -> None:
        await aggregator.apply(records)

    with_states(settings, 1, once)
    reference = MemoryWindowState()
    asyncio.run(WindowAggregator(reference, CONFIG, TOPICS, Backoff()).apply(records))
    got = latest(redis_client, settings)

    def counted(windows: dict[str, WindowStats]) -> dict[str, dict[str, object]]:
        return {
            name: window.model_dump(exclude={"updated_at", "revision"})
            for name, window in windows.items()
        }

    assert counted(got) == counted(reference.latest)
    assert sum(window.events for window in got.values()) == 2_400
