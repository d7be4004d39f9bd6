# Over 500 lines on purpose: a benchmark reads top to bottom, the setup beside what it measures.
"""The report path's costs: accepted reports/s over HTTP and over Kafka with their latency,
and the score agent's throughput with 10,000 suppressions loaded beside its throughput with
none; same broker, same run.

    python bench/report_ingest.py [--events 10000] [--latency-events 2000] [--rate 500]
        [--suppressions 10000] [--batches 50] [--http-single 1000] [--http-batches 20]
        [--batch-size 100] [--concurrency 8] [--kafka-reports 2000] [--kafka-paced 1000]
        [--kafka-rate 200]

Reports: a fresh ``l2loop worker`` (the report agent) and ``l2loop api`` (uvicorn, as
``l2loop up`` runs it) on their own topics. Four tenants get keys the way ``l2loop tenants add``
makes them; flagged verdicts (score 0.7: flagged, below the high-confidence quarantine) are put
in the verdict store for their events, each with a text of its own, so every report is a
valid false-positive report of a distinct reporter and passes admission. Over HTTP, with
``--concurrency`` requests in flight: ``--http-single`` requests of one report, then
``--http-batches`` requests of ``--batch-size``; accepted reports/s is the 202 results over the
wall time of the phase, latency is per request. Over Kafka: ``--kafka-reports`` LabelReports
produced to label-reports as one backlog, counted until the report agent's ledger
(``ReportLedger.counts``, polled every 50 ms) holds them all as routed; then
``--kafka-paced`` more at ``--kafka-rate``/s for latency: the send time to the outcome's
``decided_at`` (stamped when the agent routes the report, before it delivers the batch).

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
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
from scoring_throughput import PROMPTS, Figures, events, fresh, measure, send_keyed

from l2loop.infra.clients import tail_records
from l2loop.infra.embedded import free_port
from l2loop.infra.processes import l2loop_process, running
from l2loop.infra.services import serving_settings
from l2loop.infra.topics import LABEL_REPORTS, SCAN_VERDICTS, ensure_topics
from l2loop.logs import configure
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.reports import CuratedExample, LabelReport, ReportRoute
from l2loop.schemas.verdicts import StoredVerdict, Verdict
from l2loop.settings import Settings
from l2loop.stats import percentile
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.tenants import TenantKeys
from l2loop.stores.verdicts import VerdictStore, connect
from l2loop.streams.defences.admission import ReportLedger
from l2loop.streams.scoring import Scorer
from l2model.record import TrainingRecord, text_key
from l2model.runtime import L2Model

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
    plain, relieving = (
        Scorer(
            holder,
            executor,
            model_max_chars=settings.model_max_chars,
            block_score=settings.block_score,
            canary_tenant_id=settings.canary_tenant_id,
            suppressions=lookup,
        )
        for lookup in (None, store)
    )
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


# ---------------------------------------------------------------------------------------
# Report ingestion over HTTP and Kafka.
# ---------------------------------------------------------------------------------------
SEEDED_SCORE = 0.7  # flagged, and below report_high_confidence_score: curated, not held


@dataclass
class IngestFigures:
    reports: int
    accepted: int
    per_s: float
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class ReportTarget:
    """A flagged event in the verdict store, and the tenant it belongs to."""

    event_id: str
    tenant_id: str


def flagged(target: ReportTarget, now: datetime) -> StoredVerdict:
    verdict = Verdict(
        event_id=target.event_id,
        ts=now,
        tenant_id=target.tenant_id,
        model_version="1.0.0",
        score=SEEDED_SCORE,
        threshold=0.55,
        is_threat=True,
        family="prompt_injection",
        severity=0.5,
        context="",
        action="warn",
        latency_ms=1.0,
        truncated=False,
    )
    return StoredVerdict(verdict=verdict, text=f"how do I parse {target.event_id} in python?")


async def seed_reportable(
    settings: Settings, count: int
) -> tuple[dict[str, str], list[ReportTarget]]:
    """Tenants with keys (enough that no tenant quota is reached) and ``count`` flagged events
    spread over them."""
    tenants = max(4, -(-count // (settings.report_quota_per_tenant * 4 // 5)))
    client = connect(settings.redis_dsn)
    try:
        registry = TenantKeys(client, key_prefix=settings.topic_prefix)
        keys = {f"tenant-{t}": await registry.add(f"tenant-{t}") for t in range(tenants)}
        names = sorted(keys)
        targets = [ReportTarget(f"flagged-{i}", names[i % tenants]) for i in range(count)]
        store = VerdictStore(
            client, key_prefix=settings.topic_prefix, ttl_s=settings.stored_verdict_ttl_s
        )
        now = datetime.now(tz=UTC)
        for start in range(0, count, 1000):
            await store.put_many([flagged(t, now) for t in targets[start : start + 1000]])
    finally:
        await client.aclose()
    return keys, targets


def submission(target: ReportTarget) -> dict[str, str]:
    return {
        "event_id": target.event_id,
        "reporter_id": f"user-{target.event_id}",
        "kind": "false_positive",
        "reason": "programming",
    }


async def in_flight(
    jobs: Sequence[Callable[[], Awaitable[int]]], concurrency: int
) -> tuple[float, list[float], int]:
    """Runs ``jobs`` with ``concurrency`` at a time: (wall s, latency ms of each, sum)."""
    queue = list(reversed(jobs))
    latencies: list[float] = []
    total = 0

    async def lane() -> None:
        nonlocal total
        while queue:
            job = queue.pop()
            started = time.perf_counter()
            accepted = await job()
            total += accepted
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies, total


async def http_ingest(
    url: str,
    keys: dict[str, str],
    targets: Sequence[ReportTarget],
    batch_size: int | None,
    concurrency: int,
) -> IngestFigures:
    """Reports POSTed one per request (``batch_size`` None) or in same-tenant batches."""
    requests: list[tuple[str, object]] = []
    if batch_size is None:
        requests = [(t.tenant_id, submission(t)) for t in targets]
    else:
        for tenant in sorted(keys):
            own = [submission(t) for t in targets if t.tenant_id == tenant]
            requests += [(tenant, own[i : i + batch_size]) for i in range(0, len(own), batch_size)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        def post(tenant: str, body: object) -> Callable[[], Awaitable[int]]:
            async def call() -> int:
                answer = await client.post(
                    "/v1/reports",
                    content=orjson.dumps(body),
                    headers={
                        "Authorization": f"Bearer {keys[tenant]}",
                        "Content-Type": "application/json",
                    },
                )
                if answer.status_code != 202:
                    raise RuntimeError(f"{answer.status_code}: {answer.text[:300]}")
                return int(answer.json()["accepted"])

            return call

        wall_s, latencies, accepted = await in_flight(
            [post(tenant, body) for tenant, body in requests], concurrency
        )
    return IngestFigures(
        len(targets),
        accepted,
        accepted / wall_s,
        percentile(latencies, 0.50),
        percentile(latencies, 0.95),
    )


def routed(counts: dict[str, int]) -> int:
    final = {r.value for r in ReportRoute if r is not ReportRoute.RECEIVED}
    return sum(n for name, n in counts.items() if name.split(":", 1)[0] in final)


async def until_routed(ledger: ReportLedger, total: int, timeout_s: float = 300) -> float:
    """Polls the ledger's counters until ``total`` reports are routed; returns when."""
    deadline = time.monotonic() + timeout_s
    while routed(await ledger.counts()) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the report agent did not route {total} reports in {timeout_s}s")
        await asyncio.sleep(0.05)
    return time.perf_counter()


def label_report(target: ReportTarget) -> LabelReport:
    return LabelReport.model_validate(
        submission(target) | {"report_id": f"k-{target.event_id}", "tenant_id": target.tenant_id}
    )


async def produce_reports(
    settings: Settings, reports: Sequence[LabelReport], rate: float | None
) -> dict[str, float]:
    """Sends to label-reports keyed by event id (paced at ``rate``/s); returns send times."""
    records = [(r.report_id, r.event_id.encode(), to_bytes(r)) for r in reports]
    return await send_keyed(settings, settings.topic(LABEL_REPORTS), records, rate)


async def kafka_ingest(
    settings: Settings,
    ledger: ReportLedger,
    backlog: Sequence[ReportTarget],
    paced: Sequence[ReportTarget],
    rate: float,
) -> tuple[IngestFigures, dict[str, int]]:
    before = await ledger.counts()
    began = time.perf_counter()
    await produce_reports(settings, [label_report(t) for t in backlog], None)
    done = await until_routed(ledger, routed(before) + len(backlog))
    after = await ledger.counts()
    routes = {name: n - before.get(name, 0) for name, n in after.items()}
    reports = [label_report(t) for t in paced]
    sent = await produce_reports(settings, reports, rate)
    await until_routed(ledger, routed(after) + len(paced))
    outcomes = []
    for start in range(0, len(reports), 50):  # within the client's connection pool
        chunk = reports[start : start + 50]
        outcomes += await asyncio.gather(*(ledger.get(r.tenant_id, r.report_id) for r in chunk))
    latencies = [
        (o.decided_at.timestamp() - sent[o.report_id]) * 1000 for o in outcomes if o is not None
    ]
    figures = IngestFigures(
        len(backlog),
        routes.get(ReportRoute.CURATED.value, 0),
        len(backlog) / (done - began),
        percentile(latencies, 0.50),
        percentile(latencies, 0.95),
    )
    return figures, {name: n for name, n in routes.items() if n}


@dataclass
class IngestRun:
    http_single: IngestFigures
    http_batched: IngestFigures
    kafka: IngestFigures
    kafka_routes: dict[str, int]
    http_routes: dict[str, int]


async def ingest(settings: Settings, api_url: str, args: argparse.Namespace) -> IngestRun:
    batched = args.http_batches * args.batch_size
    total = args.http_single + batched + args.kafka_reports + args.kafka_paced
    keys, targets = await seed_reportable(settings, total)
    single_targets = targets[: args.http_single]
    batch_targets = targets[args.http_single : args.http_single + batched]
    kafka_targets = targets[args.http_single + batched :]
    client = connect(settings.redis_dsn)
    ledger = ReportLedger(client, key_prefix=settings.topic_prefix, keep_s=settings.report_keep_s)
    try:
        single = await http_ingest(api_url, keys, single_targets, None, args.concurrency)
        many = await http_ingest(api_url, keys, batch_targets, args.batch_size, args.concurrency)
        # The agent routes what the API accepted; the Kafka count starts once it is done.
        await until_routed(ledger, single.accepted + many.accepted)
        http_routes = await ledger.counts()
        kafka, kafka_routes = await kafka_ingest(
            settings,
            ledger,
            kafka_targets[: args.kafka_reports],
            kafka_targets[args.kafka_reports :],
            args.kafka_rate,
        )
    finally:
        await client.aclose()
    return IngestRun(single, many, kafka, kafka_routes, http_routes)


def report_figures(live: Settings, args: argparse.Namespace) -> IngestRun:
    settings = fresh(live, "reports")
    asyncio.run(ensure_topics(settings))
    port = free_port()
    logs = live.data_dir
    worker = l2loop_process(
        settings, "worker", ("worker",), settings.web_port, logs / "bench-reports-worker.log"
    )
    api = l2loop_process(
        settings, "api", ("api", "--port", str(port)), port, logs / "bench-reports-api.log"
    )
    with running(worker), running(api):
        worker.wait_until_ready(60.0)
        api.wait_until_ready(60.0)
        return asyncio.run(ingest(settings, f"http://127.0.0.1:{port}", args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--latency-events", type=int, default=2_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--suppressions", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=50, help="in-process batches per side")
    parser.add_argument("--http-single", type=int, default=1_000, help="one-report requests")
    parser.add_argument("--http-batches", type=int, default=20, help="batch requests")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight")
    parser.add_argument("--kafka-reports", type=int, default=2_000, help="backlog")
    parser.add_argument("--kafka-paced", type=int, default=1_000, help="for latency")
    parser.add_argument("--kafka-rate", type=float, default=200.0, help="paced reports/s")
    args = parser.parse_args()
    configure("warn")
    base = Settings(data_dir=Path("var/bench"))
    sizes = (args.events, args.latency_events, args.rate)
    with serving_settings(base) as live:
        reports = report_figures(live, args)
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

    print(
        f"reports: {args.concurrency} HTTP requests in flight; Kafka latency at "
        f"{args.kafka_rate:.0f} reports/s over {args.kafka_paced}"
    )
    print(
        f"{'ingestion':<34}{'reports':>9}{'accepted':>10}{'reports/s':>11}"
        f"{'p50 ms':>9}{'p95 ms':>9}"
    )
    for label, row in (
        ("HTTP, one report per request", reports.http_single),
        (f"HTTP, batches of {args.batch_size}", reports.http_batched),
        ("Kafka, until routed (latency paced)", reports.kafka),
    ):
        print(
            f"{label:<34}{row.reports:>9}{row.accepted:>10}{row.per_s:>11.0f}"
            f"{row.p50_ms:>9.1f}{row.p95_ms:>9.1f}"
        )
    print(f"routed by the agent, HTTP reports: {reports.http_routes}")
    print(f"routed by the agent, Kafka backlog: {reports.kafka_routes}")


if __name__ == "__main__":
    main()
