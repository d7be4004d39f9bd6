"""Redis memory of the seen-event index (decision 0018), per million allowed events.

The score agent keeps, for every event the model allowed, a digest of (tenant, text) in one
Redis hash per event-time hour, so that a missed-attack claim can be verified. This writes
``--events`` such entries through ``VerdictStore.put_many`` into a fresh embedded Redis,
spread over ``--hours`` hours as the scorer writes them (batches of 256), and prints the
memory they take beside the baseline measured in the same run: the same events as one key
with its own TTL each (the obvious layout the hourly hash replaces).

    .venv/bin/python bench/seen_index_memory.py [--events 1000000] [--hours 24]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis

from l2loop.infra.embedded import free_port, redis_process
from l2loop.stores.verdicts import SeenEvent, VerdictStore, event_digest

BATCH = 256
START = datetime(2026, 12, 1, tzinfo=UTC)


def events(count: int, hours: int) -> list[SeenEvent]:
    step = timedelta(hours=hours) / count
    return [
        SeenEvent(
            str(uuid.uuid4()), START + i * step, event_digest(f"tenant-{i % 50}", f"{i:064x}")
        )
        for i in range(count)
    ]


async def used_memory(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def measure(
    client: aioredis.Redis,
    seen: list[SeenEvent],
    write: Callable[[list[SeenEvent]], Awaitable[object]],
) -> int:
    """Bytes that writing the events took, from an empty database."""
    await client.flushdb()
    before = await used_memory(client)
    for start in range(0, len(seen), BATCH):
        await write(seen[start : start + BATCH])
    return await used_memory(client) - before


async def run(url: str, seen: list[SeenEvent], ttl_s: int) -> tuple[int, int]:
    client = aioredis.Redis.from_url(url)
    store = VerdictStore(client, key_prefix="bench.", ttl_s=ttl_s, seen_ttl_s=ttl_s)

    async def per_key(batch: list[SeenEvent]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for event in batch:
                pipe.set(f"bench.seen:{event.event_id}", event.digest, ex=ttl_s)
            await pipe.execute()

    try:
        hourly = await measure(client, seen, lambda batch: store.put_many([], batch))
        keyed = await measure(client, seen, per_key)
        return hourly, keyed
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    seen = events(args.events, args.hours)
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        redis = redis_process(port, Path(scratch))
        redis.start()
        try:
            redis.wait_until_ready(30.0)
            hourly, keyed = asyncio.run(run(f"redis://127.0.0.1:{port}/0", seen, 2 * 24 * 3600))
        finally:
            redis.stop()
    per_million = 1_000_000 / args.events
    print(f"seen-event index, {args.events:,} allowed events over {args.hours} hours")
    print(f"  hourly hash (l2loop):   {hourly * per_million / 2**20:8.1f} MiB per million events")
    print(f"  key + TTL per event:    {keyed * per_million / 2**20:8.1f} MiB per million events")
    print(f"  hourly hash / per key:  {hourly / keyed:8.2f}")


if __name__ == "__main__":
    main()
