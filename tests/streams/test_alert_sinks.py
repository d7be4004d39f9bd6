"""Alert receivers and their outboxes, on real Redis and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import httpx
import redis.asyncio as aioredis

from l2loop.resilience import Backoff
from l2loop.schemas.windows import UNSET_END, Alert, AlertmanagerWebhook
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore, Change
from l2loop.streams.alert_rules import Thresholds, alert_changes, evaluate_window
from l2loop.streams.alert_sinks import (
    AlertmanagerReceiver,
    Lease,
    OutboxDrainer,
    WebhookReceiver,
    webhook_payload,
)
from tests.fixtures.receivers import WebhookReceiver as HttpReceiver
from tests.fixtures.windows import window

FAST = Backoff(initial_s=0.05, cap_s=0.2)


def _spike_then_clear() -> list[Change]:
    windows = (window(100, canary_benign=1000, canary_fp=80), window(101))
    return alert_changes([(w, evaluate_window(w, [], Thresholds())) for w in windows], {})


def _fired_and_resolved() -> tuple[Alert, Alert]:
    firing, resolved = (change.alert for change in _spike_then_clear())
    return firing, resolved


def test_webhook_payload_is_alertmanagers_version_4() -> None:
    firing, resolved = _fired_and_resolved()
    payload = AlertmanagerWebhook.model_validate_json(webhook_payload(firing).model_dump_json())
    assert payload.version == "4" and payload.status == "firing"
    (alert,) = payload.alerts
    assert alert.labels["alertname"] == "fp_rate_spike"
    assert alert.fingerprint == firing.fingerprint
    assert alert.endsAt == UNSET_END
    assert webhook_payload(resolved).alerts[0].endsAt == resolved.ends_at


def test_alertmanager_gets_an_end_ahead_while_firing_and_the_real_end_on_resolve() -> None:
    firing, resolved = _fired_and_resolved()
    receiver = AlertmanagerReceiver(httpx.AsyncClient(), "http://am:9093/", resend_s=60)
    ahead = receiver.postable(firing).endsAt - firing.changed_at
    assert timedelta(minutes=3) < ahead <= timedelta(minutes=4, seconds=5)
    assert receiver.postable(resolved).endsAt == resolved.ends_at
    assert receiver.postable(firing).labels == firing.labels


def test_an_outbox_waits_out_a_failing_receiver_and_delivers_in_order_once(
    settings: Settings, redis_client: object, webhook_receiver: HttpReceiver
) -> None:
    changes = _spike_then_clear()
    webhook_receiver.status = 503
    webhook_receiver.start()

    async def run() -> None:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        store = AlertStore(client, key_prefix=settings.topic_prefix, receivers=["webhook"])
        assert len(await store.apply(changes)) == 2
        http = httpx.AsyncClient(timeout=2)
        # Two workers compete for the same outbox; the lease lets one deliver.
        drainers = [
            OutboxDrainer(
                store,
                WebhookReceiver(http, webhook_receiver.url),
                Lease(client, store.outbox_key("webhook") + ":lease", owner, 2.0, FAST),
                backoff=FAST,
                poll_s=0.05,
                resend_s=60,
            )
            for owner in ("a", "b")
        ]
        tasks = [asyncio.create_task(d.run()) for d in drainers]
        try:
            deadline = time.monotonic() + 30
            while webhook_receiver.refused < 3:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await store.peek_outbox("webhook", 10) != []
            webhook_receiver.status = 200
            while await store.peek_outbox("webhook", 10):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await http.aclose()
            await client.aclose()

    asyncio.run(run())
    delivered = [AlertmanagerWebhook.model_validate(p) for p in webhook_receiver.payloads()]
    fingerprint = changes[0].alert.fingerprint
    assert [(p.status, p.alerts[0].fingerprint) for p in delivered] == [
        ("firing", fingerprint),
        ("resolved", fingerprint),
    ]


def test_a_payload_the_receiver_rejects_is_dropped_not_retried_forever(
    settings: Settings, redis_client: object, webhook_receiver: HttpReceiver
) -> None:
    webhook_receiver.status = 400
    webhook_receiver.start()

    async def run() -> list[bytes]:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        store = AlertStore(client, key_prefix=settings.topic_prefix, receivers=["webhook"])
        await store.apply(_spike_then_clear()[:1])
        http = httpx.AsyncClient(timeout=2)
        drainer = OutboxDrainer(
            store,
            WebhookReceiver(http, webhook_receiver.url),
            Lease(client, store.outbox_key("webhook") + ":lease", "a", 2.0, FAST),
            backoff=FAST,
            poll_s=0.05,
            resend_s=60,
        )
        task = asyncio.create_task(drainer.run())
        try:
            deadline = time.monotonic() + 30
            while await store.peek_outbox("webhook", 1):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            return await store.peek_outbox("webhook", 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await http.aclose()
            await client.aclose()

    assert asyncio.run(run()) == []
    assert webhook_receiver.refused == 1
