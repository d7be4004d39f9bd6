"""The poison-pill rule: the decision on its own, and the guard on a real Redis, with crashes
played by a processing step that raises (an agent's crash_only turns that into an exit)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio as aioredis

from l2loop.resilience import Backoff, Health
from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason, sha256_hex
from l2loop.schemas.decoding import RawRecord
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2loop.streams.poison import AttemptLedger, PoisonGuard, Treatment, runs, treatment


@pytest.mark.parametrize(
    ("unfinished", "expected"),
    [
        (0, Treatment.PROCESS),
        (1, Treatment.ALONE),
        (2, Treatment.DEAD_LETTER),
        (5, Treatment.DEAD_LETTER),
    ],
)
def test_treatment_with_the_default_of_two_attempts(unfinished: int, expected: Treatment) -> None:
    assert treatment(unfinished, max_attempts=2) is expected


def test_a_higher_setting_retries_alone_for_longer() -> None:
    assert [treatment(n, max_attempts=4) for n in range(6)] == [
        Treatment.PROCESS,
        Treatment.ALONE,
        Treatment.ALONE,
        Treatment.ALONE,
        Treatment.DEAD_LETTER,
        Treatment.DEAD_LETTER,
    ]


def test_runs_are_consecutive_offsets_of_one_partition() -> None:
    laid_out = [("t", 1, 10), ("t", 1, 11), ("t", 1, 13), ("t", 0, 5), ("t", 0, 6), ("u", 0, 7)]
    records = [
        RawRecord(topic, partition, offset, None, b"") for topic, partition, offset in laid_out
    ]
    # A gap, another partition, another topic: each starts a run.
    assert runs(records) == ["t:1:", 10, 11, "t:1:", 13, 13, "t:0:", 5, 6, "u:0:", 7, 7]
    assert runs([]) == []


class Crash(Exception):
    """What an agent meets on the poison record; crash_only would exit the worker on it."""


@dataclass
class Agent:
    """Processes records, raising on the poison one; remembers what it did."""

    poison: bytes
    health: Health = field(default_factory=Health)
    batches: list[list[int]] = field(default_factory=list)
    pills: list[DeadLetter] = field(default_factory=list)
    # What /health said about each record while it was processed alone.
    replaying: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    async def process(self, records: Sequence[RawRecord]) -> None:
        if len(records) == 1:
            self.replaying[records[0].offset] = [
                (loop.state, loop.offset) for loop in self.health.report().crash_loops
            ]
        if any(record.value == self.poison for record in records):
            raise Crash
        self.batches.append([record.offset for record in records])

    async def deliver_pill(self, letter: DeadLetter) -> None:
        self.pills.append(letter)


POISON = b'{"event_id": "' + b"p" * 100_000 + b'"}'
RECORDS = [
    RawRecord("t.scan-events", 1, offset, b"k", POISON if offset == 12 else b"ok")
    for offset in range(10, 15)
]


def _guard(settings: Settings, client: aioredis.Redis, health: Health) -> PoisonGuard:
    return PoisonGuard(
        AttemptLedger(client, key_prefix=settings.topic_prefix, agent="score"),
        agent="score",
        max_attempts=2,
        raw_max_bytes=1024,
        pill_shown_s=600.0,
        backoff=Backoff(initial_s=0.01, cap_s=0.05),
        health=health,
    )


def _attempts(redis_client: redis.Redis, settings: Settings) -> dict[str, int]:
    stored = redis_client.hgetall(f"{settings.topic_prefix}attempts:score")
    return {name.decode(): int(count) for name, count in stored.items()}  # type: ignore[union-attr]


def test_a_record_that_crashes_twice_is_dead_lettered_by_the_third_start(
    settings: Settings, redis_client: redis.Redis
) -> None:
    health = Health()
    agent = Agent(POISON, health)

    async def start() -> None:
        # A fresh client per start, as a restarted worker has.
        client = connect(settings.redis_dsn)
        try:
            await _guard(settings, client, health).run(RECORDS, agent.process, agent.deliver_pill)
        finally:
            await client.aclose()

    # First start: the batch crashes as a whole; every record of it is counted once.
    with pytest.raises(Crash):
        asyncio.run(start())
    assert _attempts(redis_client, settings) == {f"t.scan-events:1:{o}": 1 for o in range(10, 15)}
    assert agent.batches == []

    # Second start: the suspects one by one; the poison crashes alone. Records after it,
    # not retried yet, are not blamed for its crash.
    with pytest.raises(Crash):
        asyncio.run(start())
    assert agent.batches == [[10], [11]]
    assert _attempts(redis_client, settings) == {
        "t.scan-events:1:12": 2,
        "t.scan-events:1:13": 1,
        "t.scan-events:1:14": 1,
    }
    assert health.report().status == "ok", "no suspect is in flight once the worker is gone"
    # While a suspect was retried alone, /health named it.
    assert agent.replaying == {
        10: [("replaying_suspect", 10)],
        11: [("replaying_suspect", 11)],
        12: [("replaying_suspect", 12)],
    }

    # Third start: the poison is dead-lettered unprocessed, the rest goes on. The batch is
    # read from its start again (its offsets were never committed): at-least-once.
    asyncio.run(start())
    assert agent.batches == [[10], [11], [10], [11], [13], [14]]
    (pill,) = agent.pills
    assert pill.reason is DeadLetterReason.POISON_PILL
    assert (pill.source_topic, pill.partition, pill.offset) == ("t.scan-events", 1, 12)
    assert "2 attempts of the score agent" in pill.error
    assert (len(pill.raw), pill.raw_truncated) == (1024, True)
    assert (pill.raw_size, pill.raw_sha256) == (len(POISON), sha256_hex(POISON))
    assert _attempts(redis_client, settings) == {}
    report = health.report()
    assert report.status == "failing"
    (loop,) = report.crash_loops
    assert (loop.agent, loop.state, loop.topic, loop.partition, loop.offset, loop.attempts) == (
        "score",
        "poison_pill",
        "t.scan-events",
        1,
        12,
        2,
    )


def test_a_healthy_batch_leaves_no_count_behind(
    settings: Settings, redis_client: redis.Redis
) -> None:
    agent = Agent(b"never sent")

    async def run() -> None:
        client = connect(settings.redis_dsn)
        try:
            await _guard(settings, client, Health()).run(RECORDS, agent.process, agent.deliver_pill)
        finally:
            await client.aclose()

    asyncio.run(run())
    assert agent.batches == [[10, 11, 12, 13, 14]]
    assert _attempts(redis_client, settings) == {}


@pytest.mark.parametrize("with_suspect", [False, True], ids=["whole batch", "one by one"])
def test_a_graceful_stop_mid_batch_takes_its_attempts_back(
    settings: Settings, redis_client: redis.Redis, with_suspect: bool
) -> None:
    started = asyncio.Event()

    async def hangs(records: Sequence[RawRecord]) -> None:
        started.set()
        await asyncio.Event().wait()

    async def unused(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    async def stop_mid_batch() -> dict[str, int]:
        client = connect(settings.redis_dsn)
        try:
            if with_suspect:
                # An unfinished attempt from before stays at one, not zero.
                redis_client.hset(f"{settings.topic_prefix}attempts:score", "t.scan-events:1:13", 1)
            run = asyncio.create_task(
                _guard(settings, client, Health()).run(RECORDS, hangs, unused)
            )
            await started.wait()
            counted = _attempts(redis_client, settings)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            return counted
        finally:
            await client.aclose()

    counted = asyncio.run(stop_mid_batch())
    # With a suspect the batch goes one by one: record 10 was in flight alone when it stopped.
    assert counted == {f"t.scan-events:1:{o}": 1 for o in range(10, 15)}
    left = {"t.scan-events:1:13": 1} if with_suspect else {}
    assert _attempts(redis_client, settings) == left


def test_the_ledger_keeps_one_count_a_record_read_however_the_batch_is_laid_out(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Two partitions interleaved, a gap in one (a transaction marker's offset, never read).
    records = [
        RawRecord("t.scan-events", partition, offset, None, b"ok")
        for partition, offset in [(1, 10), (1, 11), (1, 13), (0, 7), (0, 8), (1, 14)]
    ]
    names = {f"t.scan-events:{r.partition}:{r.offset}" for r in records}

    async def go() -> tuple[list[int], dict[str, int], list[int], dict[str, int]]:
        client = connect(settings.redis_dsn)
        try:
            ledger = AttemptLedger(client, key_prefix=settings.topic_prefix, agent="score")
            redis_client.hset(f"{settings.topic_prefix}attempts:score", "t.scan-events:0:8", 2)
            first = await ledger.begin(records)
            counted = _attempts(redis_client, settings)
            await ledger.finish(records[:3])
            again = await ledger.begin(records)
            return first, counted, again, _attempts(redis_client, settings)
        finally:
            await client.aclose()

    first, counted, again, left = asyncio.run(go())
    assert first == [0, 0, 0, 0, 2, 0]
    assert counted == {name: 2 if name.endswith(":0:8") else 1 for name in names}
    # Finished records start afresh; those still counted answer their count.
    assert again == [0, 0, 0, 1, 2, 1]
    assert left == counted
