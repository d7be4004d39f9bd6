"""The verdict store: flagged verdicts in Redis, with a TTL, for the report path to join on;
and the seen-event index, which lets a false-negative claim be checked against what the
scorer really saw.

The index keeps, for every event the model allowed, an 8-byte digest of (tenant, text) in one
Redis hash per event-time hour (``seen:<hour>``, field = an 8-byte digest of the event id),
expiring ``seen_ttl_s`` after the hour ends. A claim names its event id, text and event time:
it is verified when the hour's hash holds the same digest for that id, which proves tenant
and text at once and says nothing about another tenant's events. A hash per hour costs one
field per event and one expiry per hour instead of a key and a TTL per event; 8-byte digests
keep each field in Redis's smallest allocations (bench/seen_index_memory.py). Forging a
digest takes a 64-bit preimage; two event ids of one hour sharing one is as unlikely.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from l2loop.schemas.codec import to_bytes
from l2loop.schemas.verdicts import StoredVerdict


def connect(dsn: str) -> aioredis.Redis:
    # One quick retry absorbs a dropped idle connection; a real outage surfaces at once, to
    # be waited out (and logged, attempt by attempt) by l2loop.resilience. Timeouts bound
    # every call, so a Redis that hangs rather than refuses is an outage too.
    return aioredis.Redis.from_url(
        dsn,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
    )


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[aioredis.Redis]:
    """A client of ``connect``, closed when the block ends: for a command or job that talks
    to Redis once, not for an agent that holds its client for its lifetime."""
    client = connect(dsn)
    try:
        yield client
    finally:
        await client.aclose()


_HOUR_S = 3600

# KEYS: the verdicts' keys. ARGV[1]: their TTL in seconds; ARGV[i + 1]: the i-th key's
# stored verdict. One command for a batch's flagged verdicts: as SETs in a pipeline, the
# client spent about 70 µs a verdict packing each command and awaiting each reply.
_PUT_VERDICTS = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


_DIGEST_BYTES = 8


def event_digest(tenant_id: str, key: str) -> bytes:
    """What the seen-event index keeps of an event: its tenant and text key, hashed together
    (a NUL cannot occur in an identifier, so the pair is unambiguous)."""
    return hashlib.sha256(f"{tenant_id}\x00{key}".encode()).digest()[:_DIGEST_BYTES]


def _event_field(event_id: str) -> bytes:
    return hashlib.sha256(event_id.encode()).digest()[:_DIGEST_BYTES]


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """An event the model allowed, as the seen-event index keeps it."""

    event_id: str
    ts: datetime
    digest: bytes


def _hour(ts: datetime) -> int:
    return int(ts.timestamp()) // _HOUR_S


class VerdictStore:
    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str, ttl_s: int, seen_ttl_s: int = 0
    ) -> None:
        self._client = client
        self._prefix = f"{key_prefix}verdict:"
        self._seen_prefix = f"{key_prefix}seen:"
        self._ttl_s = ttl_s
        self._seen_ttl_s = seen_ttl_s
        self._put_verdicts = client.register_script(_PUT_VERDICTS)

    def key(self, event_id: str) -> str:
        return self._prefix + event_id

    @property
    def keeps_seen(self) -> bool:
        """Whether the seen-event index is on (a TTL of 0 turns it off)."""
        return self._seen_ttl_s > 0

    async def put_many(
        self, stored: Sequence[StoredVerdict], seen: Sequence[SeenEvent] = ()
    ) -> None:
        """Flagged verdicts, and allowed events into the seen-event index: one round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            if stored:
                await self._put_verdicts(
                    keys=[self.key(item.verdict.event_id) for item in stored],
                    args=[self._ttl_s, *map(to_bytes, stored)],
                    client=pipe,
                )
            if self.keeps_seen:
                # One HSET per hour for the whole batch, not one per event: packing a command
                # costs the event loop more than the field it carries.
                by_hour: dict[int, dict[bytes, bytes]] = defaultdict(dict)
                for event in seen:
                    by_hour[_hour(event.ts)][_event_field(event.event_id)] = event.digest
                for hour, fields in by_hour.items():
                    key = f"{self._seen_prefix}{hour}"
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                    pipe.expireat(key, (hour + 1) * _HOUR_S + self._seen_ttl_s)
            await pipe.execute()

    async def seen_digests(self, claims: Sequence[tuple[str, datetime]]) -> list[bytes | None]:
        """For each (event id, event time), the digest the index holds, in one round trip."""
        if not claims or not self.keeps_seen:
            return [None] * len(claims)
        async with self._client.pipeline(transaction=False) as pipe:
            for event_id, ts in claims:
                pipe.hget(f"{self._seen_prefix}{_hour(ts)}", _event_field(event_id))
            raws = await pipe.execute()
        return [None if raw is None else bytes(raw) for raw in raws]

    async def get(self, event_id: str) -> StoredVerdict | None:
        raw = await self._client.get(self.key(event_id))
        return None if raw is None else StoredVerdict.model_validate_json(raw)

    async def get_many(self, event_ids: Sequence[str]) -> dict[str, StoredVerdict]:
        """The stored verdicts of ``event_ids`` that the store holds, in one round trip."""
        if not event_ids:
            return {}
        wanted = list(dict.fromkeys(event_ids))
        raws = await self._client.mget([self.key(event_id) for event_id in wanted])
        return {
            event_id: StoredVerdict.model_validate_json(raw)
            for event_id, raw in zip(wanted, raws, strict=True)
            if raw is not None
        }

    async def close(self) -> None:
        await self._client.aclose()
