"""The window agent in real ``l2loop worker`` processes, on the real broker and Redis.

Three days of event time are replayed in seconds: scan events (production, canaries and
malformed ones) in time order through the real score agent, and accepted FP labels on
curated-examples. One undisturbed single-worker run is the reference; a run with two
workers, one of them SIGKILLed mid-replay and started again, must produce exactly the same
window counts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from l2loop.demo.traffic import demo_prompts
from l2loop.infra.embedded import free_port
from l2loop.infra.topics import (
    CURATED_EXAMPLES,
    SCAN_EVENTS,
    SCAN_VERDICTS,
    WINDOW_STATS,
    ensure_topics,
)
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.windows import WindowStats
from l2loop.settings import Settings
from l2loop.streams.window_store import latest_key
from tests.fixtures.pipeline import Drained, WorkerProcess, drain
from tests.fixtures.services import isolated_settings
from tests.fixtures.window_records import at, label

DAYS = 3
EVENTS_PER_HOUR = 30
CANARY_SHARE, MALFORMED_SHARE = 0.1, 0.02
LABELS = 25


@dataclass(frozen=True)
class Traffic:
    """What the test sends, and what it expects the windows to count."""

    events: list[tuple[str, bytes]]  # (event id, value) in event-time order
    labels: list[tuple[str, bytes]]
    production: Counter[int]  # hour -> production events
    canary: Counter[tuple[int, int]]  # (hour, label) -> canaries
    malformed: Counter[int]
    reported: Counter[int]  # hour -> distinct events with an FP label
    ts_of: dict[str, datetime]


def hour_of(ts: datetime) -> int:
    return int((ts - at(0)).total_seconds()) // 3600


def replay_traffic(seed: int = 21) -> Traffic:
    rng = random.Random(seed)
    prompts = demo_prompts(400, seed=seed)
    events: list[tuple[datetime, str, bytes]] = []
    production: Counter[int] = Counter()
    canary: Counter[tuple[int, int]] = Counter()
    malformed: Counter[int] = Counter()
    ts_of: dict[str, datetime] = {}
    for hour in range(DAYS * 24):
        for i in range(EVENTS_PER_HOUR):
            ts = at(hour) + timedelta(seconds=rng.uniform(0, 3599.999))
            event_id = f"rp-{hour:03d}-{i:03d}"
            prompt = rng.choice(prompts)
            event: dict[str, object] = {
                "event_id": event_id,
                "ts": ts.isoformat(),
                "tenant_id": rng.choice(["acme", "globex"]),
                "text": prompt.text,
            }
            roll = rng.random()
            if roll < MALFORMED_SHARE:
                # Bad in a way that keeps a readable event time: dead-lettered into its hour.
                event["text"] = "   "
                malformed[hour] += 1
            elif roll < MALFORMED_SHARE + CANARY_SHARE:
                event["ground_truth"] = {"label": prompt.label, "source": "canary"}
                event["tenant_id"] = Settings().canary_tenant_id
                canary[(hour, prompt.label)] += 1
            else:
                production[hour] += 1
                ts_of[event_id] = ts
            events.append((ts, event_id, orjson.dumps(event)))
    events.sort()
    reported: Counter[int] = Counter()
    labels = []
    for event_id in sorted(rng.sample(sorted(ts_of), LABELS)):
        ts = ts_of[event_id]
        reported[hour_of(ts)] += 1
        curated_at = ts + timedelta(hours=rng.uniform(1, 40))
        labels.append((curated_at, event_id, to_bytes(label(event_id, ts, curated_at))))
    labels.sort()
    return Traffic(
        events=[(eid, value) for _, eid, value in events],
        labels=[(eid, value) for _, eid, value in labels],
        production=production,
        canary=canary,
        malformed=malformed,
        reported=reported,
        ts_of=ts_of,
    )


async def send(settings: Settings, traffic: Traffic, per_second: float | None = None) -> None:
    """Events keyed by event id (as the scanner fleet sends them), in event-time order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        pending = []
        step = 100
        for start in range(0, len(traffic.events), step):
            for event_id, value in traffic.events[start : start + step]:
                pending.append(
                    await producer.send(settings.topic(SCAN_EVENTS), value, key=event_id.encode())
                )
            if per_second:
                await asyncio.sleep(step / per_second)
        for event_id, value in traffic.labels:
            pending.append(
                await producer.send(settings.topic(CURATED_EXAMPLES), value, key=event_id.encode())
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def windows(client: redis.Redis, settings: Settings) -> dict[int, WindowStats]:
    """The latest window of each hour (one model version in these runs), by hour."""
    raw = client.hgetall(latest_key(settings.topic_prefix))
    out = {}
    for value in raw.values():
        window = WindowStats.model_validate_json(value)
        out[hour_of(window.window_start)] = window
    return out


def counted(found: dict[int, WindowStats]) -> tuple[int, int, int]:
    return (
        sum(w.events + w.canary_fp_rate.total + w.recall.total for w in found.values()),
        sum(w.dead_letters for w in found.values()),
        sum(w.reported_fp_rate.hits for w in found.values()),
    )


def wait_for_windows(
    client: redis.Redis, settings: Settings, traffic: Traffic, timeout_s: float = 150
) -> dict[int, WindowStats]:
    wanted = (
        sum(traffic.production.values()) + sum(traffic.canary.values()),
        sum(traffic.malformed.values()),
        LABELS,
    )
    deadline = time.monotonic() + timeout_s
    found = windows(client, settings)
    while counted(found) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        found = windows(client, settings)
    assert counted(found) == wanted, f"windows counted {counted(found)}, sent {wanted}"
    return found


def counts(window: WindowStats) -> dict[str, object]:
    """Everything a window counts; not its latencies' values, which depend on the run."""
    return window.model_dump(
        include={
            "model_version",
            "events",
            "flagged",
            "suppressed",
            "flag_rate",
            "canary_fp_rate",
            "recall",
            "reported_fp_rate",
            "reported_fn",
            "dead_letters",
            "error_rate",
            "late_events",
            "clamped_future",
        }
    ) | {"latency_counts": (window.model_latency_ms.count, window.e2e_latency_ms.count)}


@dataclass
class ReferenceRun:
    settings: Settings
    traffic: Traffic
    windows: dict[int, WindowStats]
    client: redis.Redis


@pytest.fixture(scope="module")
def reference(
    service_endpoints: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceRun]:
    settings = isolated_settings(service_endpoints, tmp_path_factory.mktemp("reference") / "var")
    asyncio.run(ensure_topics(settings))
    traffic = replay_traffic()
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    client = redis.Redis.from_url(settings.redis_dsn)
    worker.start()
    try:
        asyncio.run(send(settings, traffic))
        found = wait_for_windows(client, settings, traffic)
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
        yield ReferenceRun(settings, traffic, found, client)
    finally:
        worker.stop()
        client.close()


def test_replayed_days_are_counted_in_their_hours(reference: ReferenceRun) -> None:
    traffic, found = reference.traffic, reference.windows
    assert set(found) == set(range(DAYS * 24))
    for hour, window in found.items():
        assert window.events == traffic.production[hour], hour
        assert window.canary_fp_rate.total == traffic.canary[(hour, 0)], hour
        assert window.recall.total == traffic.canary[(hour, 1)], hour
        assert window.dead_letters == traffic.malformed[hour], hour
        assert window.reported_fp_rate.hits == traffic.reported[hour], hour
        assert window.error_rate.hits == 0
        assert window.late_events == 0 and window.clamped_future == 0
        assert window.model_latency_ms.count == window.events + window.canary_fp_rate.total + (
            window.recall.total
        )
    # Flagged, FP and TP against the verdicts the score agent published
    verdicts_topic = reference.settings.topic(SCAN_VERDICTS)
    drained = drain(
        reference.settings,
        [verdicts_topic],
        lambda d: (
            len({v["event_id"] for v in d.values(verdicts_topic)})
            >= len(traffic.events) - sum(traffic.malformed.values())
        ),
    )
    flagged: Counter[tuple[int, str]] = Counter()
    seen = set()
    for v in drained.values(verdicts_topic):
        if v["event_id"] in seen:
            continue
        seen.add(v["event_id"])
        hour = hour_of(datetime.fromisoformat(str(v["ts"]).replace("Z", "+00:00")))
        truth = v["ground_truth"]
        kind = "prod" if not isinstance(truth, dict) else ("fp" if truth["label"] == 0 else "tp")
        flagged[(hour, kind)] += bool(v["is_threat"])
    for hour, window in found.items():
        assert window.flagged == flagged[(hour, "prod")], hour
        assert window.canary_fp_rate.hits == flagged[(hour, "fp")], hour
        assert window.recall.hits == flagged[(hour, "tp")], hour
    assert sum(w.flagged for w in found.values()) > 0


def test_late_fp_label_moves_the_events_hour_and_re_emits_it(reference: ReferenceRun) -> None:
    settings, client = reference.settings, reference.client
    # A production event of hour 10 that nobody has reported yet
    reported = set(eid for eid, _ in reference.traffic.labels)
    event_id = next(
        eid
        for eid, ts in sorted(reference.traffic.ts_of.items())
        if hour_of(ts) == 10 and eid not in reported
    )
    event_ts = reference.traffic.ts_of[event_id]
    curated_at = event_ts + timedelta(days=2)  # accepted two days later, in hour 58
    before = windows(client, settings)

    async def send_label() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic(CURATED_EXAMPLES),
                to_bytes(label(event_id, event_ts, curated_at, report_id="late-1")),
                key=event_id.encode(),
            )
        finally:
            await producer.stop()

    asyncio.run(send_label())
    deadline = time.monotonic() + 30
    after = windows(client, settings)
    while after[10].revision == before[10].revision and time.monotonic() < deadline:
        time.sleep(0.2)
        after = windows(client, settings)

    assert after[10].reported_fp_rate.hits == before[10].reported_fp_rate.hits + 1
    assert after[10].revision == before[10].revision + 1
    assert after[10].events == before[10].events
    label_hour = hour_of(curated_at)
    assert label_hour == 58
    assert after[label_hour] == before[label_hour]
    # ...and the new revision of hour 10 was emitted on window-stats
    stats_topic = settings.topic(WINDOW_STATS)
    start = after[10].window_start.isoformat().replace("+00:00", "Z")

    def emitted(d: Drained) -> bool:
        return any(
            w["window_start"] == start and w["revision"] == after[10].revision
            for w in d.values(stats_topic)
        )

    assert emitted(drain(settings, [stats_topic], emitted, timeout_s=30))


def test_two_workers_one_killed_count_exactly_like_one(
    reference: ReferenceRun, service_endpoints: tuple[str, str], tmp_path: Path
) -> None:
    settings = isolated_settings(service_endpoints, tmp_path / "var")
    asyncio.run(ensure_topics(settings))
    traffic = replay_traffic()
    client = redis.Redis.from_url(settings.redis_dsn)
    workers = [
        WorkerProcess(
            settings.model_copy(update={"web_port": free_port()}),
            settings.data_dir / f"worker-{n}.log",
        )
        for n in range(2)
    ]
    total = sum(traffic.production.values()) + sum(traffic.canary.values())
    killed_at = 0

    async def replay_and_kill() -> None:
        nonlocal killed_at
        sending = asyncio.create_task(send(settings, traffic, per_second=400))
        # Kill once a third is counted: mid-replay, however long the start took. (Polled:
        # the count lives in Redis, there is no event to wait on.)
        while (killed_at := counted(windows(client, settings))[0]) < total // 3:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        workers[0].kill()
        workers[0].start()
        await sending

    for w in workers:
        w.start()
    try:
        asyncio.run(replay_and_kill())
        found = wait_for_windows(client, settings, traffic)
        for w in workers:
            assert w.process is not None and w.process.poll() is None, w.log()[-3000:]
    finally:
        for w in workers:
            w.stop()
        client.close()
    verdicts_topic = settings.topic(SCAN_VERDICTS)
    published = drain(settings, [verdicts_topic], lambda d: False, timeout_s=1).values(
        verdicts_topic
    )
    duplicates = len(published) - len({v["event_id"] for v in published})
    print(
        f"\nkilled a worker with {killed_at} of {total} verdicts counted; the score agent "
        f"published {duplicates} duplicate verdicts, which the windows did not count"
    )
    assert workers[0].starts == 2 and 0 < killed_at < total
    assert {h: counts(w) for h, w in found.items()} == {
        h: counts(w) for h, w in reference.windows.items()
    }
