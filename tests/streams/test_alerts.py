"""The alert evaluator on real Redis, and in a real worker process on the real broker."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from l2loop.infra.embedded import free_port
from l2loop.infra.topics import ALERTS, WINDOW_STATS
from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.windows import WindowStats
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore
from l2loop.streams.alert_rules import Thresholds, alert_id
from l2loop.streams.alerts import AlertEvaluator, decode_window_stats
from tests.fixtures.pipeline import WorkerProcess, consumed_everything, drain
from tests.fixtures.receivers import WebhookReceiver, webhook_statuses
from tests.fixtures.windows import publish_windows, store_latest, window


def _record(value: bytes | None) -> RawRecord:
    return RawRecord("l2.window-stats", 0, 7, b"k", value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, DeadLetterReason.EMPTY_MESSAGE),
        (b"", DeadLetterReason.EMPTY_MESSAGE),
        (b"\xff\xfe", DeadLetterReason.INVALID_UTF8),
        (b"{not json", DeadLetterReason.INVALID_JSON),
        (b"[1, 2]", DeadLetterReason.NOT_AN_OBJECT),
        (b'{"window_start": 1}', DeadLetterReason.MISSING_FIELD),
    ],
)
def test_decoding_window_stats_is_total(value: bytes | None, reason: DeadLetterReason) -> None:
    decoded = decode_window_stats(_record(value))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == reason
    assert decoded.offset == 7


def test_decoding_a_window_stats_record() -> None:
    stats = window(3)
    assert decode_window_stats(_record(stats.model_dump_json().encode())) == stats


def _spike(hour: int, revision: int = 1) -> WindowStats:
    return window(hour, revision=revision, canary_benign=1000, canary_fp=80)


def test_one_alert_per_window_and_rule_however_many_evaluators(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def run() -> tuple[int, int, int]:
        clients = [aioredis.Redis.from_url(settings.redis_dsn) for _ in range(4)]
        stores = [
            AlertStore(c, key_prefix=settings.topic_prefix, receivers=["topic", "webhook"])
            for c in clients
        ]
        evaluators = [AlertEvaluator(store, Thresholds()) for store in stores]
        try:
            fired = await asyncio.gather(*(e.evaluate([_spike(100)]) for e in evaluators))
            # The spike, revised, and evaluated again by everyone: still one alert.
            refired = await asyncio.gather(*(e.evaluate([_spike(100, 2)]) for e in evaluators))
            resolved = await asyncio.gather(*(e.evaluate([window(101)]) for e in evaluators))
            # After resolution the window's alert is done for good.
            again = await asyncio.gather(*(e.evaluate([_spike(100, 3)]) for e in evaluators))
            assert not any(refired) and not any(again)
            return (
                sum(len(made) for made in fired),
                sum(len(made) for made in resolved),
                len(await stores[0].open_alerts()),
            )
        finally:
            for client in clients:
                await client.aclose()

    fired, resolved, still_open = asyncio.run(run())
    assert (fired, resolved, still_open) == (1, 1, 0)
    outbox = redis_client.lrange(f"{settings.topic_prefix}alerts:outbox:webhook", 0, -1)
    assert [orjson.loads(item)["status"] for item in outbox] == ["firing", "resolved"]
    state = redis_client.hgetall(f"{settings.topic_prefix}alerts:state")
    spike_id = alert_id("fp_rate_spike", _spike(100).window_start, "m1")
    assert state == {spike_id.encode(): b"resolved"}


def test_a_stale_revision_is_judged_by_the_newest_one_stored(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def run() -> list[str]:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            # Revision 3 (diluted back under the clearing level) is already stored when the
            # spiking revision 2 arrives late.
            await store_latest(client, settings, [window(100, revision=3)])
            evaluator = AlertEvaluator(
                AlertStore(client, key_prefix=settings.topic_prefix), Thresholds()
            )
            made = await evaluator.evaluate([_spike(100, revision=2)])
            made += await evaluator.evaluate([_spike(101, revision=1)])
            return [f"{a.rule}:{a.labels['window_start']}" for a in made]
        finally:
            await client.aclose()

    spike_start = window(101).window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert asyncio.run(run()) == [f"fp_rate_spike:{spike_start}"]


def test_a_spike_read_after_the_window_that_ended_it_fires_and_resolves(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def run() -> list[tuple[str, str]]:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            evaluator = AlertEvaluator(
                AlertStore(client, key_prefix=settings.topic_prefix), Thresholds()
            )
            # Hour 101's partition is read first; hour 100's spike arrives afterwards.
            await store_latest(client, settings, [window(101), _spike(100)])
            made = await evaluator.evaluate([window(101)])
            made += await evaluator.evaluate([_spike(100)])
            return [(a.rule, a.status) for a in made]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [("fp_rate_spike", "firing"), ("fp_rate_spike", "resolved")]


def test_a_rolled_back_version_s_spike_resolves_once_the_restored_model_reads_clear(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def run() -> list[tuple[str, str, str]]:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            evaluator = AlertEvaluator(
                AlertStore(client, key_prefix=settings.topic_prefix), Thresholds()
            )
            spike = window(100, model_version="spike", canary_benign=1000, canary_fp=80)
            served_on = window(101, model_version="spike", canary_benign=1000, canary_fp=80)
            await store_latest(client, settings, [spike, served_on, window(101)])
            made = await evaluator.evaluate([spike])
            # Hour 101 still has a window of the spike version: not replaced yet.
            made += await evaluator.evaluate([window(101)])
            # Hour 102 is the restored model's alone, and it reads clear.
            await store_latest(client, settings, [window(102)])
            made += await evaluator.evaluate([window(102)])
            return [
                (a.rule, a.status, a.model_version)
                for a in made
                if a.window_start == spike.window_start
            ]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [
        ("fp_rate_spike", "firing", "spike"),
        ("fp_rate_spike", "resolved", "spike"),
    ]


def test_flag_rate_shift_reads_the_trailing_windows_from_the_store(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def run() -> list[str]:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            await store_latest(client, settings, [window(h, flagged=100) for h in range(24)])
            evaluator = AlertEvaluator(
                AlertStore(client, key_prefix=settings.topic_prefix), Thresholds()
            )
            made = await evaluator.evaluate([window(24, flagged=110)])
            made += await evaluator.evaluate([window(25, flagged=400)])
            return [f"{a.rule}:{a.window_start:%H}" for a in made]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [f"flag_rate_shift:{window(25).window_start:%H}"]


def _wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stable_series(hours: int) -> list[WindowStats]:
    """Hours of ordinary traffic, each window emitted as it fills (revisions 1..3)."""
    series = []
    for hour in range(hours):
        flagged = 95 + (hour * 7) % 11
        for revision, share in ((1, 0.05), (2, 0.5), (3, 1.0)):
            series.append(
                window(
                    hour,
                    revision=revision,
                    events=int(2000 * share),
                    flagged=int(flagged * share),
                    canary_benign=int(400 * share),
                    canary_fp=int((hour % 3) * share),
                    canary_malicious=int(400 * share),
                    canary_tp=int(390 * share),
                )
            )
    return series


def _spike_and_recovery(hour: int) -> list[WindowStats]:
    return [
        window(hour, revision=1, canary_benign=60, canary_fp=6),
        window(hour, revision=2, canary_benign=500, canary_fp=40),
        window(hour, revision=3, canary_benign=1000, canary_fp=85),
        window(hour + 1, revision=1, canary_benign=40, canary_fp=0),
        window(hour + 1, revision=2, canary_benign=400, canary_fp=2),
    ]


def _dreadful_but_tiny(hour: int) -> WindowStats:
    return window(
        hour,
        events=60,
        flagged=60,
        canary_benign=30,
        canary_fp=30,
        canary_malicious=30,
        canary_tp=0,
        errors=20,
        model_p95_ms=80.0,
    )


def _alert_records(settings: Settings) -> list[dict[str, Any]]:
    topic = settings.topic(ALERTS)
    return [dict(r) for r in drain(settings, [topic], lambda d: False, timeout_s=2).values(topic)]


@pytest.fixture
def alert_settings(topics: Settings, webhook_receiver: WebhookReceiver) -> Settings:
    return topics.model_copy(
        update={
            "alert_webhook_url": webhook_receiver.url,
            "retry_cap_s": 1.0,
            "alert_outbox_poll_s": 0.2,
        }
    )


def test_stable_hours_raise_nothing_and_a_spike_raises_one_alert_delivered_once(
    alert_settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.start()
    worker = WorkerProcess(alert_settings, alert_settings.data_dir / "worker.log")
    worker.start()
    try:
        asyncio.run(publish_windows(alert_settings, _stable_series(30)))
        asyncio.run(publish_windows(alert_settings, _spike_and_recovery(30)))
        # Later, a window that looks dreadful on every rule but has too few samples, and one
        # of a model that misses a family of threats.
        asyncio.run(
            publish_windows(
                alert_settings,
                [_dreadful_but_tiny(40), window(36, canary_malicious=1000, canary_tp=820)],
            )
        )
        _wait_for("three deliveries", lambda: len(webhook_receiver.payloads()) >= 3)
        _wait_for(
            "every window evaluated",
            lambda: consumed_everything(alert_settings, alert_settings.topic(WINDOW_STATS)),
        )
        # Let a duplicate, if one were coming, arrive.
        time.sleep(2 * alert_settings.alert_outbox_poll_s + 1)
    finally:
        worker.stop()
    spike_start = window(30).window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    recall_start = window(36).window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    statuses = webhook_statuses(webhook_receiver)
    assert sorted(s[:3] for s in statuses) == [
        ("fp_rate_spike", "firing", spike_start),
        ("fp_rate_spike", "resolved", spike_start),
        ("recall_drop", "firing", recall_start),
    ], worker.log()[-3000:]
    spike = [s for s in statuses if s[0] == "fp_rate_spike"]
    assert [s[1] for s in spike] == ["firing", "resolved"]
    assert spike[0][3] == spike[1][3]
    records = _alert_records(alert_settings)
    assert [(r["rule"], r["status"]) for r in records if r["rule"] == "fp_rate_spike"] == [
        ("fp_rate_spike", "firing"),
        ("fp_rate_spike", "resolved"),
    ]
    assert sorted((r["rule"], r["status"]) for r in records) == [
        ("fp_rate_spike", "firing"),
        ("fp_rate_spike", "resolved"),
        ("recall_drop", "firing"),
    ]


def test_a_receiver_down_during_a_spike_still_gets_the_alert_once_back(
    alert_settings: Settings, webhook_receiver: WebhookReceiver, redis_client: redis.Redis
) -> None:
    # The receiver is not listening yet: every delivery is refused.
    worker = WorkerProcess(alert_settings, alert_settings.data_dir / "worker.log")
    worker.start()
    state_key = f"{alert_settings.topic_prefix}alerts:state"
    spike_id = alert_id("fp_rate_spike", window(30).window_start, "m1")
    try:
        asyncio.run(publish_windows(alert_settings, _stable_series(30)))
        asyncio.run(publish_windows(alert_settings, _spike_and_recovery(30)))
        # The stream goes on while the receiver is down: the spike fires and resolves.
        _wait_for(
            "the spike resolved while the receiver is down",
            lambda: redis_client.hget(state_key, spike_id) == b"resolved",
        )
        _wait_for(
            "the worker retrying the receiver",
            lambda: "dependency_unavailable dependency=webhook" in worker.log(),
        )
        assert webhook_receiver.payloads() == []
        webhook_receiver.start()
        _wait_for("both deliveries", lambda: len(webhook_receiver.payloads()) >= 2)
        time.sleep(2 * alert_settings.alert_outbox_poll_s + 1)
    finally:
        worker.stop()
    statuses = webhook_statuses(webhook_receiver)
    assert [s[:2] for s in statuses] == [
        ("fp_rate_spike", "firing"),
        ("fp_rate_spike", "resolved"),
    ], worker.log()[-3000:]


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path: Path, webhook_receiver: WebhookReceiver) -> Iterator[str]:
    """A real Alertmanager whose one route is the test's webhook receiver."""
    if ALERTMANAGER is None:
        pytest.skip("needs Alertmanager (Debian's `prometheus-alertmanager` package)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [alertname, window_start, model_version]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {webhook_receiver.url}\n"
        "        send_resolved: true\n"
    )
    port = free_port()
    with (tmp_path / "alertmanager.log").open("wb") as log:
        process = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for("Alertmanager", lambda: _answers(f"{url}/-/ready"), timeout_s=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_alerts_reach_a_real_alertmanager_and_its_receivers(
    topics: Settings, webhook_receiver: WebhookReceiver, alertmanager: str
) -> None:
    settings = topics.model_copy(
        update={"alertmanager_url": alertmanager, "retry_cap_s": 1.0, "alert_outbox_poll_s": 0.2}
    )
    webhook_receiver.start()
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        asyncio.run(publish_windows(settings, _stable_series(26)))
        asyncio.run(publish_windows(settings, _spike_and_recovery(26)[:3]))
        _wait_for("Alertmanager to notify", lambda: len(webhook_receiver.payloads()) >= 1)
        held = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        assert [a["labels"]["alertname"] for a in held] == ["fp_rate_spike"]
        asyncio.run(publish_windows(settings, _spike_and_recovery(26)[3:]))
        _wait_for(
            "the resolved notification",
            lambda: any(s[1] == "resolved" for s in webhook_statuses(webhook_receiver)),
        )
    finally:
        worker.stop()
    statuses = webhook_statuses(webhook_receiver)
    spike_start = window(26).window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert {s[:3] for s in statuses} == {
        ("fp_rate_spike", "firing", spike_start),
        ("fp_rate_spike", "resolved", spike_start),
    }, worker.log()[-3000:]
    # Alertmanager computes its own fingerprint of the labels: one alert throughout.
    assert len({s[3] for s in statuses}) == 1
