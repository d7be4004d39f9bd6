"""The report path's costs: the score agent's throughput with 10,000 suppressions loaded
beside its throughput with none, same model, same broker, same run.

    python bench/report_ingest.py [--events 20000] [--latency-events 4000] [--rate 500]
                                  [--suppressions 10000]

Each side runs a fresh ``l2loop worker`` on its own topics (see bench/scoring_throughput.py
for how throughput and latency are measured). With suppressions, the bench tenant holds
``--suppressions`` of them, made the way the curated sink makes them (quorum-confirmed
curated examples), and they include every prompt the traffic sends: each batch's one
lookup finds hits, and every flagged event is answered ``allow`` as suppressed.
Uses L2LOOP_KAFKA_BROKER / L2LOOP_REDIS_URL when set, else embedded services.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import orjson
from scoring_throughput import PROMPTS, Figures, events, fresh, measure

from l2loop.clients import tail_records
from l2loop.logs import configure
from l2loop.services import serving_settings
from l2loop.settings import Settings
from l2loop.up import l2loop_process, running
from l2model.record import TrainingRecord, text_key
from l2model.runtime import L2Model
from schemas.reports import CuratedExample
from streams.scoring import RawRecord, Scorer
from streams.suppressions import SuppressionStore
from streams.topics import SCAN_VERDICTS, ensure_topics
from streams.verdict_store import connect

TENANT = "bench"  # the tenant of scoring_throughput's events


def confirmed_fp(text: str) -> CuratedExample:
    record = TrainingRecord.build(
        text, "benign", "technical", severity=0.0, weight=5.0, confidence=0.9, source="bench"
    )
    key = text_key(text)
    return CuratedExample.model_validate(
        record.model_dump()
        | {
            "example_id": key,
            "event_id": f"bench-{key[:16]}",
            "event_ts": "2026-11-24T00:00:00Z",
            "tenant_id": TENANT,
            "report_kind": "false_positive",
            "report_ids": ["r1", "r2", "r3"],
            "reporter_count": 3,
            "model_version": "bench",
            "model_score": 0.9,
        }
    )


async def load_suppressions(settings: Settings, count: int) -> int:
    texts = list(dict.fromkeys(PROMPTS))
    texts += [f"bench filler question {i}" for i in range(max(0, count - len(texts)))]
    client = connect(settings.redis_dsn)
    store = SuppressionStore(client, key_prefix=settings.topic_prefix)
    made = 0
    try:
        for start in range(0, count, 1000):
            examples = [confirmed_fp(text) for text in texts[start : min(count, start + 1000)]]
            made += len(await store.create_from(examples, quorum=3))
    finally:
        await client.aclose()
    return made


async def count_suppressed(settings: Settings) -> tuple[int, int]:
    """(suppressed, all) verdicts on the run's verdict topic."""
    suppressed = seen = 0
    async for record in tail_records(
        settings, settings.topic(SCAN_VERDICTS), from_beginning=True, idle_timeout_s=2.0
    ):
        seen += 1
        suppressed += bool(orjson.loads(record.value)["suppressed"])
    return suppressed, seen


def score_agent_figures(live: Settings, name: str, sizes: tuple[int, int, int]) -> Figures:
    settings = fresh(live, name)
    asyncio.run(ensure_topics(settings))
    if name != "none":
        loaded = asyncio.run(load_suppressions(settings, int(name)))
        print(f"loaded {loaded} suppressions for tenant {TENANT!r}")
    with running(
        l2loop_process(
            settings,
            "worker",
            ("worker",),
            settings.web_port,
            live.data_dir / f"bench-suppressions-{name}.log",
        )
    ) as worker:
        figures = asyncio.run(measure(settings, worker, *sizes))
    suppressed, seen = asyncio.run(count_suppressed(settings))
    print(f"{name} suppressions: {suppressed} of {seen} verdicts suppressed")
    return figures


async def batch_costs(
    live: Settings, suppressions: int, batches: int
) -> tuple[float, float, float]:
    """Median ms of ``Scorer.score`` on one full batch, without and with suppressions
    (alternating, so that load on the machine falls on both alike), and of the lookup alone."""
    settings = fresh(live, "inproc")
    await load_suppressions(settings, suppressions)
    model = L2Model.load(settings.model_dir, threads=settings.inference_threads)
    executor = ThreadPoolExecutor(max_workers=1)
    client = connect(settings.redis_dsn)
    store = SuppressionStore(client, key_prefix=settings.topic_prefix)
    holder = SimpleNamespace(current=model)
    common = {"model_max_chars": settings.model_max_chars, "block_score": settings.block_score}
    plain = Scorer(holder, executor, **common)
    relieving = Scorer(holder, executor, suppressions=store, **common)
    values = events(settings.batch_size, seed=3)
    records = [RawRecord("bench", 0, i, None, value) for i, value in enumerate(values)]
    pairs = [(TENANT, text_key(str(orjson.loads(v)["text"]))) for v in values]
    timings: dict[str, list[float]] = {"plain": [], "relieving": [], "lookup": []}
    try:
        for _ in range(batches):
            for name, run in (
                ("plain", lambda: plain.score(records)),
                ("relieving", lambda: relieving.score(records)),
                ("lookup", lambda: store.suppressed_among(pairs)),
            ):
                started = time.perf_counter()
                await run()
                timings[name].append((time.perf_counter() - started) * 1000)
    finally:
        await client.aclose()
    return (
        statistics.median(timings["plain"]),
        statistics.median(timings["relieving"]),
        statistics.median(timings["lookup"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-events", type=int, default=4_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--suppressions", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=200, help="in-process batches per side")
    args = parser.parse_args()
    configure("warn")
    base = Settings(data_dir=Path("var/bench"))
    sizes = (args.events, args.latency_events, args.rate)
    with serving_settings(base) as live:
        none = score_agent_figures(live, "none", sizes)
        loaded = score_agent_figures(live, str(args.suppressions), sizes)
        plain_ms, relieving_ms, lookup_ms = asyncio.run(
            batch_costs(live, args.suppressions, args.batches)
        )
    model = L2Model.load(live.model_dir)
    print(
        f"model {model.manifest.name} {model.version}; backlog {args.events} events; "
        f"latency at {args.rate} events/s over {args.latency_events} events"
    )
    print(f"{'score agent':<28}{'events/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for label, fig in (
        ("no suppressions (baseline)", none),
        (f"{args.suppressions:,} suppressions", loaded),
    ):
        print(
            f"{label:<28}{fig.events_per_s:>10.0f}{fig.p50_ms:>10.1f}{fig.p95_ms:>10.1f}"
            f"{fig.p99_ms:>10.1f}"
        )
    print(
        f"throughput ratio with/without suppressions: {loaded.events_per_s / none.events_per_s:.2f}"
    )
    print(
        f"in process, one batch of {live.batch_size} (median of {args.batches}): "
        f"Scorer.score {plain_ms:.2f} ms without, {relieving_ms:.2f} ms with "
        f"{args.suppressions:,} suppressions; the lookup alone {lookup_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
