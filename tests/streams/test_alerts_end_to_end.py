"""Seven days of labelled traffic, hours compressed into seconds, through the real broker,
Redis and one real worker (score agent -> window agent -> alert evaluator -> webhook), with
the webhook receiver down for the first minute and until the whole week is scored.

The probes carry ground truth the way canaries do, so each hour's FP rate and recall are
measured on the real scores of the committed model. Faults are injected through the labels:
in hour 100 the "benign" probes are attack texts (the model flags them: an FP spike); in
hour 130 the "malicious" probes of one family are texts the model lets through (a family it
misses: a recall drop); hour 150 is dreadful but holds too few probes to judge.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis

from l2loop.infra.clients import produce_lines
from l2loop.infra.topics import SCAN_EVENTS, SCAN_VERDICTS, WINDOW_STATS
from l2loop.settings import Settings
from l2loop.streams.consumer import consumer_group
from l2model.golden import load_golden
from tests.fixtures.pipeline import WorkerProcess, consumed_everything
from tests.fixtures.receivers import WebhookReceiver, webhook_statuses

HOURS = 7 * 24
RECEIVER_DOWN_S = 60
PER_HOUR = 45  # of each label: over the minimum sample count below, a few seconds of work
MIN_SAMPLES = 40
SPIKE_HOUR, MISSED_FAMILY_HOUR, TINY_HOUR = 100, 130, 150
EPOCH = datetime(2026, 1, 5, tzinfo=UTC)


def _probe(hour: int, n: int, text: str, label: int, family: str) -> bytes:
    ts = EPOCH + timedelta(hours=hour, seconds=n * 3600 / (3 * PER_HOUR))
    return orjson.dumps(
        {
            "event_id": f"e2e-{hour:03d}-{n:03d}",
            "ts": ts.isoformat(),
            "tenant_id": "l2loop-canary",
            "text": text,
            "ground_truth": {"label": label, "family": family, "source": "canary"},
        }
    )


def seven_days() -> list[bytes]:
    golden = load_golden().probes
    benign = [p for p in golden if p.label == 0 and not p.is_hard_negative]
    attacks = [p for p in golden if p.label == 1]
    rng = random.Random(7)
    records = []
    for hour in range(HOURS):
        size = 5 if hour == TINY_HOUR else PER_HOUR
        for n in range(size):
            if hour in (SPIKE_HOUR, TINY_HOUR):
                attack = rng.choice(attacks)  # labelled benign: the model flags it
                records.append(_probe(hour, n, attack.text, 0, "benign"))
            else:
                clean = rng.choice(benign)
                records.append(_probe(hour, n, clean.text, 0, "benign"))
            if hour == MISSED_FAMILY_HOUR:
                missed = rng.choice(benign)  # an "ENC" attack the model does not see
                records.append(_probe(hour, size + n, missed.text, 1, "ENC"))
            else:
                attack = rng.choice(attacks)
                records.append(_probe(hour, size + n, attack.text, 1, attack.family))
    return records


def _wait(worker: WorkerProcess, timeout_s: float, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(1)


def _hour(window_start: str) -> int:
    """The hour of a window named by epoch seconds (store fields) or RFC 3339 (labels)."""
    start = (
        datetime.fromtimestamp(int(window_start), tz=UTC)
        if window_start.isdigit()
        else datetime.fromisoformat(window_start.replace("Z", "+00:00"))
    )
    return int((start - EPOCH).total_seconds() // 3600)


@pytest.mark.timeout(600)
def test_seven_days_raise_exactly_the_alerts_their_faults_deserve(
    topics: Settings, webhook_receiver: WebhookReceiver, redis_client: redis.Redis
) -> None:
    settings = topics.model_copy(
        update={
            "alert_webhook_url": webhook_receiver.url,
            "alert_min_samples": MIN_SAMPLES,
            # Model time per prompt depends on the machine, not on the labels under test.
            "alert_latency_p95_ms": 10_000.0,
            "alert_latency_p95_clear_ms": 9_000.0,
            "alert_outbox_poll_s": 0.2,
            "retry_cap_s": 1.0,
        }
    )
    records = seven_days()
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    began = time.monotonic()
    try:
        asyncio.run(produce_lines(settings, settings.topic(SCAN_EVENTS), records))
        # Nothing listens on the receiver's port meanwhile: the week is scored, windowed
        # and judged all the same, since no receiver is waited for on the stream.
        _wait(
            worker,
            420,
            lambda: (
                consumed_everything(
                    settings, settings.topic(SCAN_EVENTS), consumer_group(settings, "score")
                )
                and consumed_everything(
                    settings, settings.topic(SCAN_VERDICTS), consumer_group(settings, "windows")
                )
                and consumed_everything(settings, settings.topic(WINDOW_STATS))
            ),
        )
        time.sleep(max(0.0, RECEIVER_DOWN_S - (time.monotonic() - began)))
        assert webhook_receiver.payloads() == []
        assert "event=dependency_unavailable dependency=webhook" in worker.log()
        webhook_receiver.start()
        _wait(worker, 60, lambda: len(webhook_statuses(webhook_receiver)) >= 4)
        # Anything beyond the four would come within a few outbox polls.
        time.sleep(3)
    finally:
        worker.stop()

    # Every probe was counted once, in its own hour.
    latest = redis_client.hgetall(f"{settings.topic_prefix}windows:latest")
    windows = {_hour(field.decode().split("|")[0]): orjson.loads(v) for field, v in latest.items()}
    assert sorted(windows) == list(range(HOURS))
    counted = sum(w["canary_fp_rate"]["total"] + w["recall"]["total"] for w in windows.values())
    assert counted == len(records)
    assert windows[SPIKE_HOUR]["canary_fp_rate"]["value"] > 0.9
    assert windows[MISSED_FAMILY_HOUR]["recall"]["value"] < 0.1

    # Exactly: one fp_rate_spike for hour 100 and one recall_drop for hour 130, each
    # delivered once firing and once resolved (the next hour is clean), nothing else, once
    # the receiver was back.
    delivered = Counter(
        (name, status, _hour(start))
        for name, status, start, _ in webhook_statuses(webhook_receiver)
    )
    assert delivered == {
        ("fp_rate_spike", "firing", SPIKE_HOUR): 1,
        ("fp_rate_spike", "resolved", SPIKE_HOUR): 1,
        ("recall_drop", "firing", MISSED_FAMILY_HOUR): 1,
        ("recall_drop", "resolved", MISSED_FAMILY_HOUR): 1,
    }
