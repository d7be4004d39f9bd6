"""The verdict store: flagged verdicts in Redis, with a TTL, for the report path to join on."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.codec import to_bytes
from schemas.verdicts import StoredVerdict


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


class VerdictStore:
    def __init__(self, client: aioredis.Redis, *, key_prefix: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = f"{key_prefix}verdict:"
        self._ttl_s = ttl_s

    def key(self, event_id: str) -> str:
        return self._prefix + event_id

    async def put_many(self, stored: Sequence[StoredVerdict]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for item in stored:
                pipe.set(self.key(item.verdict.event_id), to_bytes(item), ex=self._ttl_s)
            await pipe.execute()

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
