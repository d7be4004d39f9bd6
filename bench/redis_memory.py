"""Redis memory per million stored verdicts, and what else grows in Redis with every event.

What the loop keeps in Redis per event, each written here through the project's own code
into a fresh embedded Redis:

- the verdict store: every *flagged* verdict with its text and L1 summary (StoredVerdict
  JSON), one key each with a TTL of ``stored_verdict_ttl_s`` (``VerdictStore.put_many``, in
  batches of 256 as the scorer writes them). Texts are the scoring bench's attack prompts as
  drawn, and the same prompts joined into texts of 500 characters; event ids are UUIDs;
- the seen-event index: every *allowed* event, in an hourly hash (``put_many``, as above;
  bench/seen_index_memory.py measures its layout against the alternatives);
- the window agent's dedupe sets: an 8-byte digest of every verdict's event id in a set per
  event-time hour, kept ``window_dedupe_ttl_s`` (``fold_partition`` and
  ``RedisWindowState.apply``, as the window agent applies a batch).

Each is written for several counts from an empty database; the bytes per record are the
slope of ``used_memory`` against the count (least squares), so that what does not grow with
the count (the server's own, the window counters of an hour) stays out. The baseline of the
same run: the same texts as plain keys holding only the text, with the same TTL. The text
TTL (``L2LOOP_TEXT_TTL_S``) does not shrink a stored verdict, which always holds its text: it
shortens how long the verdict is kept (``Settings.stored_verdict_ttl_s``).

    .venv/bin/python bench/redis_memory.py [--counts 10000 50000 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis

from l2loop.demo.traffic import Prompt, demo_prompts
from l2loop.infra.embedded import embedded_services
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.verdicts import StoredVerdict, Verdict
from l2loop.settings import Settings
from l2loop.stores.verdicts import SeenEvent, VerdictStore, event_digest
from l2loop.streams.window_state import (
    SourcePartition,
    WindowConfig,
    WindowTopics,
    fold_partition,
)
from l2loop.streams.window_store import RedisWindowState
from l2model.record import text_key

BATCH = 256
START = datetime(2026, 12, 1, tzinfo=UTC)
# Events spread over this much event time: the dedupe sets and the seen index are hourly.
SPAN = timedelta(hours=3)
LONG_CHARS = 500
RATES = (100, 1_000, 10_000)
MIB = 2**20
GIB = 2**30


def attack_prompts() -> list[Prompt]:
    """The scoring bench's prompts that a model would flag: its attack prompts."""
    return [prompt for prompt in demo_prompts() if prompt.label == 1]


def long_texts(texts: Sequence[str]) -> list[str]:
    """Consecutive prompts joined and cut to ``LONG_CHARS`` characters, one per prompt."""
    joined = " ".join(texts)
    while len(joined) < len(texts) * LONG_CHARS:
        joined += " " + joined
    return [joined[i * LONG_CHARS : (i + 1) * LONG_CHARS] for i in range(len(texts))]


def verdicts(count: int, texts: Sequence[str], families: Sequence[str]) -> list[StoredVerdict]:
    step = SPAN / count
    stored = []
    for i in range(count):
        ts = START + i * step
        text = texts[i % len(texts)]
        verdict = Verdict(
            event_id=str(uuid.uuid4()),
            ts=ts,
            tenant_id=f"tenant-{i % 50}",
            model_version="1.0.0",
            score=0.9 + (i % 97) / 1000,
            threshold=0.55104,
            is_threat=True,
            family=families[i % len(families)],
            severity=0.5 + (i % 43) / 100,
            context="attack",
            action="block",
            latency_ms=11.5 + (i % 31) / 7,
            model_ms=0.045 + (i % 13) / 1000,
            truncated=False,
            scored_at=ts + timedelta(milliseconds=20 + i % 50),
        )
        stored.append(StoredVerdict(verdict=verdict, text=text))
    return stored


@dataclass(frozen=True)
class Growth:
    """Bytes a layout took over an empty database, at each count."""

    counts: tuple[int, ...]
    used: tuple[int, ...]
    dataset: tuple[int, ...]

    def slope(self, values: Sequence[int]) -> float:
        n = len(self.counts)
        mean_x = sum(self.counts) / n
        mean_y = sum(values) / n
        covariance = sum(
            (x - mean_x) * (y - mean_y) for x, y in zip(self.counts, values, strict=True)
        )
        return covariance / sum((x - mean_x) ** 2 for x in self.counts)

    @property
    def per_record(self) -> float:
        return self.slope(self.used)

    @property
    def dataset_per_record(self) -> float:
        return self.slope(self.dataset)


async def memory(client: aioredis.Redis) -> tuple[int, int]:
    info = await client.info("memory")
    return int(info["used_memory"]), int(info["used_memory_dataset"])


async def growth(
    client: aioredis.Redis,
    counts: Sequence[int],
    write: Callable[[int, int], Awaitable[object]],
) -> Growth:
    """``write(start, end)`` writes records [start, end); each count from an empty database."""
    used, dataset = [], []
    # Once before measuring: what a first write costs once (a Lua script's cache, which
    # FLUSHDB keeps) is no record's.
    await write(0, 1)
    for count in counts:
        await client.flushdb()
        before = await memory(client)
        for start in range(0, count, BATCH):
            await write(start, min(start + BATCH, count))
        after = await memory(client)
        used.append(after[0] - before[0])
        dataset.append(after[1] - before[1])
    return Growth(tuple(counts), tuple(used), tuple(dataset))


async def measure(url: str, counts: Sequence[int], settings: Settings) -> dict[str, Growth]:
    largest = max(counts)
    prompts = attack_prompts()
    attacks = [prompt.text for prompt in prompts]
    families = [prompt.family for prompt in prompts]
    mixes = {"attack prompts as drawn": attacks, f"{LONG_CHARS}-char texts": long_texts(attacks)}
    client = aioredis.Redis.from_url(url)
    store = VerdictStore(
        client,
        key_prefix=settings.topic_prefix,
        ttl_s=settings.stored_verdict_ttl_s,
        seen_ttl_s=settings.seen_event_ttl_s,
    )
    results: dict[str, Growth] = {}
    try:
        for name, texts in mixes.items():
            stored = verdicts(largest, texts, families)
            mean_chars = sum(len(s.text) for s in stored) / largest
            mean_json = sum(len(to_bytes(s)) for s in stored) / largest

            async def put(start: int, end: int, stored: list[StoredVerdict] = stored) -> None:
                await store.put_many(stored[start:end])

            async def raw(start: int, end: int, stored: list[StoredVerdict] = stored) -> None:
                async with client.pipeline(transaction=False) as pipe:
                    for item in stored[start:end]:
                        pipe.set(
                            store.key(item.verdict.event_id),
                            item.text,
                            ex=settings.stored_verdict_ttl_s,
                        )
                    await pipe.execute()

            label = f"{name}, {mean_chars:.0f} chars, JSON {mean_json:.0f} B"
            results[f"verdict store: {label}"] = await growth(client, counts, put)
            results[f"baseline, text alone: {label}"] = await growth(client, counts, raw)

        stored = verdicts(largest, attacks, families)
        seen = [
            SeenEvent(
                s.verdict.event_id,
                s.verdict.ts,
                event_digest(s.verdict.tenant_id, text_key(s.text)),
            )
            for s in stored
        ]

        async def index(start: int, end: int) -> None:
            await store.put_many([], seen[start:end])

        results["seen-event index (per allowed event)"] = await growth(client, counts, index)
        results["window dedupe sets (per verdict)"] = await growth(
            client, counts, window_writer(client, settings, stored)
        )
    finally:
        await client.aclose()
    return results


def window_writer(
    client: aioredis.Redis, settings: Settings, stored: Sequence[StoredVerdict]
) -> Callable[[int, int], Awaitable[object]]:
    """Verdicts on ``scan-verdicts`` partition 0, folded and applied as the window agent does
    (a write from offset 0 again follows each flush)."""
    topics = WindowTopics.from_settings(settings)
    source = SourcePartition(topics.verdicts, 0)
    config = WindowConfig.from_settings(settings)
    state = RedisWindowState(
        client,
        key_prefix=settings.topic_prefix,
        window_ttl_s=settings.window_grace_s + settings.window_size_s + 24 * 3600,
        dedupe_ttl_s=settings.window_dedupe_ttl_s,
    )
    values = [to_bytes(item.verdict) for item in stored]

    async def write(start: int, end: int) -> None:
        records = [
            RawRecord(topics.verdicts, 0, offset, None, values[offset])
            for offset in range(start, end)
        ]
        mark = (await state.marks([source]))[source]
        delta = fold_partition(source, records, mark, config, topics)
        if delta is not None:
            await state.apply([delta])

    return write


def report(
    results: dict[str, Growth],
    settings: Settings,
    ttls: dict[str, int],
    version: str,
    empty: tuple[int, int],
) -> None:
    """``ttls``: the stored verdicts' TTL under each setting compared."""
    counts = next(iter(results.values())).counts
    print(f"{version}: memory per record, slope over {', '.join(f'{c:,}' for c in counts)} records")
    print(f"  empty server: used_memory {empty[0] / MIB:.2f} MiB, dataset {empty[1] / MIB:.2f} MiB")
    print(
        f"  {'layout':<78} {'B/record':>9} {'dataset B':>9} {'MiB per million':>15}"
        "   at each count, B/record"
    )
    for name, figures in results.items():
        at_counts = "  ".join(
            f"{u / c:6.0f}" for u, c in zip(figures.used, figures.counts, strict=True)
        )
        print(
            f"  {name:<78} {figures.per_record:9.0f} {figures.dataset_per_record:9.0f} "
            f"{figures.per_record * 1e6 / MIB:15.1f}   {at_counts}"
        )
    stored = {name: g for name, g in results.items() if name.startswith("verdict store")}
    for what, ttl_s in ttls.items():
        print(
            f"\nVerdict store, {what} ({ttl_s / 86400:g} d): flagged verdicts/s x "
            f"{ttl_s:,} s x bytes per verdict, GiB"
        )
        for name, figures in stored.items():
            cells = "  ".join(
                f"{rate:>6,}/s {rate * ttl_s * figures.per_record / GIB:8.1f}" for rate in RATES
            )
            print(f"  {name.removeprefix('verdict store: '):<50} {cells}")
    seen = results["seen-event index (per allowed event)"].per_record
    dedupe = results["window dedupe sets (per verdict)"].per_record
    seen_s = settings.seen_event_ttl_s + 3600
    dedupe_s = settings.window_dedupe_ttl_s + 3600
    print(
        f"\nPer event, whatever is flagged: seen index allowed events/s x "
        f"{seen_s / 3600:g} h x {seen:.0f} B; dedupe sets events/s x {dedupe_s / 3600:g} h x "
        f"{dedupe:.0f} B, GiB"
    )
    for rate in RATES:
        print(
            f"  {rate:>6,} events/s: seen index {rate * seen_s * seen / GIB:6.2f}   "
            f"dedupe sets {rate * dedupe_s * dedupe / GIB:6.2f}"
        )


async def server(url: str) -> tuple[str, tuple[int, int]]:
    """The server's name and version, and the memory it takes empty."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
        info = await client.info("server")
        # Valkey answers as Redis 7.2 for clients and names itself beside it.
        name = f"Valkey {info['valkey_version']}" if "valkey_version" in info else "Redis"
        return f"{name} (redis_version {info['redis_version']})", await memory(client)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument(
        "--text-ttl-s", type=int, default=24 * 3600, help="a text TTL to compare with none"
    )
    args = parser.parse_args()
    if len(set(args.counts)) < 2:
        parser.error("--counts needs two different counts at least, for a slope")
    settings = Settings()
    # A Redis of its own (the embedded one), so that nothing else's keys are counted.
    with (
        tempfile.TemporaryDirectory() as scratch,
        embedded_services(Path(scratch), kafka=False) as services,
    ):
        version, empty = asyncio.run(server(services.redis_url))
        results = asyncio.run(measure(services.redis_url, sorted(args.counts), settings))
    ttls = {
        "the verdict TTL": settings.stored_verdict_ttl_s,
        f"L2LOOP_TEXT_TTL_S={args.text_ttl_s}": settings.model_copy(
            update={"text_ttl_s": args.text_ttl_s}
        ).stored_verdict_ttl_s,
    }
    report(results, settings, ttls, version, empty)


if __name__ == "__main__":
    main()
