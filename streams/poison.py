"""Poison pills: a record that keeps crashing its agent is dead-lettered by the next start.

Crash-only agents (l2loop.resilience) exit on an error nobody foresaw, and the restarted
worker reads the same uncommitted records again: a record that causes the crash would crash
it forever. So before an agent processes a batch, it counts an attempt for every record of
it in Redis (one round trip), and clears the counts once the batch is delivered. A crash
leaves them behind, and the next start (of any worker of the group) finds them:

- a record with an unfinished attempt is a *suspect*: it is processed alone, so that a crash
  now names the one record that causes it;
- a suspect whose unfinished attempts reached ``L2LOOP_POISON_PILL_ATTEMPTS`` is not
  processed again: it is dead-lettered with reason ``poison_pill`` (raw bytes bounded, like
  every dead letter), counted in ``l2loop_poison_pills_total`` and logged.

While an agent retries suspects, and for a while after it dead-lettered a poison pill, the
worker's ``/health`` says ``failing``. A graceful stop (cancellation) mid-batch takes its
attempt back, best effort: stopping is not crashing. Decision 0016 says why it is built so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Final, Literal, TypeVar, cast

import redis.asyncio as aioredis
from prometheus_client import Counter

from l2loop.logs import get_logger
from l2loop.resilience import HEALTH, Backoff, CrashLoopState, Health, retry_until_done
from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord, dead_letter
from l2loop.settings import Settings

log = get_logger(__name__)

T = TypeVar("T")

POISON_PILLS = Counter(
    "l2loop_poison_pills_total",
    "records dead-lettered unprocessed because they were in flight whenever their agent crashed",
    ["agent"],
)
SUSPECTS = Counter(
    "l2loop_crash_suspects_total",
    "records retried alone because they were in flight when their agent last crashed",
    ["agent"],
)

# The attempt counts of records in flight; a count outlives its batch only after a crash, and
# is read back by the next start. Idle counts (a partition never read again) expire.
ATTEMPTS_KEEP_S: Final = 30 * 24 * 3600
# How long a stopping agent may spend taking its attempt back before it gives up on it.
FORGET_TIMEOUT_S: Final = 1.0

# The scripts take a batch's records as runs of consecutive offsets, three arguments a run
# (field prefix "topic:partition:", first offset, last offset), and keep one field per record:
# a batch of a few partitions costs the client a few arguments, not one per record, and the
# reply names only the records that have a count (as arguments and a reply per record, the
# ledger cost the score agent about 8 µs of its event loop a record).
#
# KEYS[1]: the agent's attempt hash. ARGV[1]: keep s; ARGV[2..]: the runs. Counts an attempt
# for each record that has none and answers, flat, the field and count of each that had one:
# a suspect (count > 0) is counted only when it is retried alone, so that records of a
# crashed batch that were not yet retried are not blamed for another's crash.
_BEGIN: Final = """
local unfinished = {}
for i = 2, #ARGV, 3 do
  for offset = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]) do
    local name = string.format('%s%d', ARGV[i], offset)
    local n = tonumber(redis.call('HGET', KEYS[1], name) or '0')
    if n == 0 then
      redis.call('HSET', KEYS[1], name, 1)
    else
      unfinished[#unfinished + 1] = name
      unfinished[#unfinished + 1] = n
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return unfinished
"""
# KEYS[1]: the agent's attempt hash. ARGV: the runs. Clears their records' counts.
_FINISH: Final = """
for i = 1, #ARGV, 3 do
  for offset = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]) do
    redis.call('HDEL', KEYS[1], string.format('%s%d', ARGV[i], offset))
  end
end
return 0
"""


class Treatment(StrEnum):
    PROCESS = "process"  # no unfinished attempt: with its batch
    ALONE = "alone"  # a suspect: on its own, so that a crash names it
    DEAD_LETTER = "dead_letter"  # a poison pill: not processed again


def treatment(unfinished: int, max_attempts: int) -> Treatment:
    """What to do with a record that has ``unfinished`` attempts that never completed."""
    if unfinished <= 0:
        return Treatment.PROCESS
    if unfinished >= max_attempts:
        return Treatment.DEAD_LETTER
    return Treatment.ALONE


def pill_error(agent: str, unfinished: int) -> str:
    return (
        f"{unfinished} attempts of the {agent} agent at this offset never finished (the "
        "agent crashed, or its worker was killed, while the record was in flight); "
        "dead-lettered unprocessed"
    )


def field(record: RawRecord) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


def runs(records: Sequence[RawRecord]) -> list[str | int]:
    """``records`` as the scripts' runs of consecutive offsets of one partition, flat: a
    batch read partition by partition is one run a partition, and a gap in the offsets
    starts a new run, so that no field is kept for an offset that was not read."""
    flat: list[str | int] = []
    topic, partition, last = None, None, -2
    for record in records:
        if record.offset == last + 1 and record.partition == partition and record.topic == topic:
            flat[-1] = last = record.offset
            continue
        topic, partition, last = record.topic, record.partition, record.offset
        flat += [f"{topic}:{partition}:", last, last]
    return flat


class AttemptLedger:
    """Unfinished attempts per record (topic, partition, offset) of one agent, in Redis."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, agent: str) -> None:
        self._client = client
        self._key = f"{key_prefix}attempts:{agent}"
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)

    async def begin(self, records: Sequence[RawRecord]) -> list[int]:
        """Counts an attempt for each record without one; the counts before, in order."""
        if not records:
            return []
        reply = cast(
            list[bytes | int],
            await self._begin(keys=[self._key], args=[ATTEMPTS_KEEP_S, *runs(records)]),
        )
        if not reply:
            return [0] * len(records)
        pairs = zip(reply[::2], reply[1::2], strict=True)
        counts = {cast(bytes, name).decode(): int(n) for name, n in pairs}
        return [counts.get(field(record), 0) for record in records]

    async def retry(self, record: RawRecord) -> None:
        """Counts one more attempt for a suspect about to be retried alone."""
        await self._client.hincrby(self._key, field(record), 1)

    async def finish(self, records: Sequence[RawRecord]) -> None:
        if records:
            await self._finish(keys=[self._key], args=runs(records))

    async def restore(self, counts: dict[str, int]) -> None:
        """Sets counts back (a record's attempt taken back), in one round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            for name, count in counts.items():
                if count:
                    pipe.hset(self._key, name, count)
                else:
                    pipe.hdel(self._key, name)
            await pipe.execute()


# Processes records (one batch, or one suspect alone) and delivers what they became.
Process = Callable[[Sequence[RawRecord]], Awaitable[None]]
# Delivers the dead letter of a poison pill (and anything the agent records beside it).
DeliverPill = Callable[[DeadLetter], Awaitable[None]]


class PoisonGuard:
    """Runs an agent's batches under the poison-pill rule (see the module's docstring)."""

    def __init__(
        self,
        ledger: AttemptLedger,
        *,
        agent: str,
        max_attempts: int,
        raw_max_bytes: int,
        pill_shown_s: float,
        backoff: Backoff,
        health: Health = HEALTH,
    ) -> None:
        self._ledger = ledger
        self._agent = agent
        self._max = max_attempts
        self._raw_max = raw_max_bytes
        self._shown_s = pill_shown_s
        self._backoff = backoff
        self._health = health

    @classmethod
    def for_agent(cls, client: aioredis.Redis, settings: Settings, agent: str) -> PoisonGuard:
        return cls(
            AttemptLedger(client, key_prefix=settings.topic_prefix, agent=agent),
            agent=agent,
            max_attempts=settings.poison_pill_attempts,
            raw_max_bytes=settings.dead_letter_raw_max_bytes,
            pill_shown_s=settings.poison_pill_health_s,
            backoff=settings.backoff,
        )

    async def _redis(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        return await retry_until_done(
            operation, dependency="redis", what=what, backoff=self._backoff
        )

    async def run(
        self, records: Sequence[RawRecord], process: Process, deliver_pill: DeliverPill
    ) -> None:
        before = await self._redis(lambda: self._ledger.begin(records), "count_attempts")
        if not any(before):
            # This run counted every record: a stop takes them all back.
            try:
                await process(records)
                await self._redis(lambda: self._ledger.finish(records), "clear_attempts")
            except asyncio.CancelledError:
                await self._forget(lambda: self._ledger.finish(records))
                raise
            return
        # What this run counted and has not finished: taken back if the worker stops.
        pending = {field(r): 0 for r, n in zip(records, before, strict=True) if n == 0}
        try:
            await self._one_by_one(records, before, pending, process, deliver_pill)
        except asyncio.CancelledError:
            if pending:
                await self._forget(lambda: self._ledger.restore(pending))
            raise

    async def _finish(self, records: Sequence[RawRecord], pending: dict[str, int]) -> None:
        await self._redis(lambda: self._ledger.finish(records), "clear_attempts")
        for record in records:
            pending.pop(field(record), None)

    async def _forget(self, take_back: Callable[[], Awaitable[None]]) -> None:
        # Best effort: Redis may be the reason the batch was held; a count left behind makes
        # its records suspects at the next start, retried alone, and no more.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(take_back(), FORGET_TIMEOUT_S)

    async def _one_by_one(
        self,
        records: Sequence[RawRecord],
        before: Sequence[int],
        pending: dict[str, int],
        process: Process,
        deliver_pill: DeliverPill,
    ) -> None:
        suspects = [(r, n) for r, n in zip(records, before, strict=True) if n]
        log.warning(
            "crash_suspects",
            agent=self._agent,
            suspects=len(suspects),
            records=len(records),
            first=field(suspects[0][0]),
            most_attempts=max(n for _, n in suspects),
        )
        try:
            for record, unfinished in zip(records, before, strict=True):
                action = treatment(unfinished, self._max)
                if action is Treatment.DEAD_LETTER:
                    await self._dead_letter(record, unfinished, deliver_pill)
                    continue
                if action is Treatment.ALONE:
                    self._health.replaying(self._state(record, unfinished, "replaying_suspect"))
                    SUSPECTS.labels(self._agent).inc()
                    await self._redis(
                        functools.partial(self._ledger.retry, record), "count_attempts"
                    )
                    pending[field(record)] = unfinished
                await process([record])
                await self._finish([record], pending)
        finally:
            self._health.replayed(self._agent)

    async def _dead_letter(
        self, record: RawRecord, unfinished: int, deliver_pill: DeliverPill
    ) -> None:
        # Not even decoded: whatever in it crashed the agent is not given another chance.
        letter = dead_letter(
            record,
            DeadLetterReason.POISON_PILL,
            pill_error(self._agent, unfinished),
            raw_max_bytes=self._raw_max,
        )
        await deliver_pill(letter)
        await self._redis(lambda: self._ledger.finish([record]), "clear_attempts")
        POISON_PILLS.labels(self._agent).inc()
        self._health.poison_pill(self._state(record, unfinished, "poison_pill"), self._shown_s)
        log.error(
            "poison_pill_dead_lettered",
            agent=self._agent,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            attempts=unfinished,
            raw_size=letter.raw_size,
            raw_sha256=letter.raw_sha256,
        )

    def _state(
        self,
        record: RawRecord,
        unfinished: int,
        state: Literal["replaying_suspect", "poison_pill"],
    ) -> CrashLoopState:
        return CrashLoopState(
            agent=self._agent,
            state=state,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            attempts=unfinished,
            since=time.time(),
        )
