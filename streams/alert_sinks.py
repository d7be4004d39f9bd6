"""Alert receivers: the alerts topic, Alertmanager's API and any Alertmanager-style webhook.

The evaluator never talks to a receiver. It records each state change in Redis together with
one outbox entry per receiver (l2loop.stores.alerts); here one worker at a time per receiver,
holding a lease, delivers the outbox in order. A receiver that is down is retried with
backoff, its outbox grows meanwhile, and the stream goes on: nothing waits for it.
Delivery is at least once (a worker that dies between sending and acknowledging leaves the
entry for the next lease holder); receivers deduplicate by fingerprint and status.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

import httpx
import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import ValidationError

from l2loop.infra.clients import Publish
from l2loop.logs import get_logger
from l2loop.resilience import TRANSIENT_ERRORS, Backoff, retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import utc_now
from l2loop.schemas.windows import Alert, AlertmanagerAlert, AlertmanagerWebhook, PostableAlert
from l2loop.stores.alerts import (
    ALERTMANAGER_RECEIVER,
    TOPIC_RECEIVER,
    WEBHOOK_RECEIVER,
    AlertStore,
)

log = get_logger(__name__)

ALERTS_DELIVERED = Counter(
    "l2loop_alerts_delivered_total", "alert state changes delivered", ["receiver", "status"]
)


class ReceiverUnavailable(ConnectionError):
    """The receiver answered but did not take the alert (5xx, 429, ...): try again later."""


class ReceiverRejected(Exception):
    """The receiver refused the payload itself (400, 422): sending it again cannot help."""


RECEIVER_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, httpx.TransportError)


class AlertReceiver(Protocol):
    name: str

    async def deliver(self, alert: Alert) -> None: ...


async def post_json(client: httpx.AsyncClient, url: str, body: bytes) -> None:
    response = await client.post(url, content=body, headers={"content-type": "application/json"})
    if response.status_code in (400, 422):
        raise ReceiverRejected(f"{url} answered {response.status_code}: {response.text[:200]}")
    if not response.is_success:
        raise ReceiverUnavailable(f"{url} answered {response.status_code}")


class TopicReceiver:
    """One record per state change on the ``alerts`` topic, keyed by fingerprint."""

    name = TOPIC_RECEIVER

    def __init__(self, publish: Publish, topic: str) -> None:
        self._publish = publish
        self._topic = topic

    async def deliver(self, alert: Alert) -> None:
        delivered = await self._publish(self._topic, alert.fingerprint.encode(), to_bytes(alert))
        await delivered


class WebhookReceiver:
    """Any receiver of Alertmanager's webhook JSON; one payload per state change."""

    name = WEBHOOK_RECEIVER

    def __init__(self, client: httpx.AsyncClient, url: str, generator_url: str = "") -> None:
        self._client = client
        self._url = url
        self._generator_url = generator_url

    async def deliver(self, alert: Alert) -> None:
        await post_json(
            self._client, self._url, to_bytes(webhook_payload(alert, self._generator_url))
        )

    async def resend(self, open_alerts: Sequence[Alert]) -> None:
        return None


def webhook_payload(alert: Alert, generator_url: str = "") -> AlertmanagerWebhook:
    return AlertmanagerWebhook(
        groupKey=f'{{}}:{{alertname="{alert.rule}", fingerprint="{alert.fingerprint}"}}',
        status=alert.status,
        receiver="l2loop",
        groupLabels={"alertname": alert.rule},
        commonLabels=alert.labels,
        commonAnnotations=alert.annotations,
        externalURL=generator_url,
        alerts=[AlertmanagerAlert.from_alert(alert, generator_url)],
    )


class AlertmanagerReceiver:
    """Alertmanager's ``POST /api/v2/alerts``, the way Prometheus uses it.

    A firing alert is sent with ``endsAt`` a few re-send intervals ahead and re-sent while it
    fires, so that Alertmanager resolves it by itself if every worker is gone; a resolved one
    is sent once with its real ``endsAt``.
    """

    name = ALERTMANAGER_RECEIVER

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, resend_s: float, generator_url: str = ""
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/v2/alerts"
        self._valid_for = timedelta(seconds=4 * resend_s)
        self._generator_url = generator_url

    def postable(self, alert: Alert) -> PostableAlert:
        ends_at = alert.ends_at if alert.status == "resolved" else None
        return PostableAlert(
            labels=alert.labels,
            annotations=alert.annotations,
            startsAt=alert.starts_at,
            endsAt=ends_at or utc_now() + self._valid_for,
            generatorURL=self._generator_url,
        )

    async def _post(self, alerts: Sequence[Alert]) -> None:
        body = orjson.dumps([self.postable(a).model_dump(mode="json") for a in alerts])
        await post_json(self._client, self._url, body)

    async def deliver(self, alert: Alert) -> None:
        await self._post([alert])

    async def resend(self, open_alerts: Sequence[Alert]) -> None:
        if open_alerts:
            await self._post(open_alerts)


# KEYS: lease   ARGV: owner, ttl ms. Takes a free lease or renews our own; 1 when we hold it.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


# How long a lease outlives its holder: a dead worker's receivers wait at most this long.
LEASE_TTL_S = 10.0


class Lease:
    """One holder per receiver across the cluster, so that deliveries keep their order."""

    def __init__(
        self, client: aioredis.Redis, key: str, owner: str, ttl_s: float, backoff: Backoff
    ) -> None:
        self._key = key
        self._owner = owner
        self._ttl_s = ttl_s
        self._backoff = backoff
        self._script = client.register_script(_LEASE_SCRIPT)
        self._held_until = 0.0

    @property
    def held(self) -> bool:
        # A margin, so that we stop before another worker may believe the lease is free.
        return time.monotonic() < self._held_until - self._ttl_s / 3

    async def keep(self) -> None:
        while True:
            asked = time.monotonic()
            got = await retry_until_done(
                lambda: self._script(keys=[self._key], args=[self._owner, int(self._ttl_s * 1000)]),
                dependency="redis",
                what="alert_outbox_lease",
                backoff=self._backoff,
            )
            self._held_until = asked + self._ttl_s if got else 0.0
            await asyncio.sleep(self._ttl_s / 4)


class OutboxDrainer:
    """Delivers one receiver's outbox while this worker holds its lease."""

    def __init__(
        self,
        store: AlertStore,
        receiver: AlertReceiver,
        lease: Lease,
        *,
        backoff: Backoff,
        poll_s: float,
        resend_s: float,
    ) -> None:
        self._store = store
        self._receiver = receiver
        self._lease = lease
        self._backoff = backoff
        self._poll_s = poll_s
        self._resend_s = resend_s
        self._last_resend = time.monotonic()

    async def run(self) -> None:
        await asyncio.gather(self._lease.keep(), self._drain())

    async def _drain(self) -> None:
        name = self._receiver.name
        while True:
            if not self._lease.held:
                await asyncio.sleep(self._poll_s)
                continue
            items = await retry_until_done(
                lambda: self._store.peek_outbox(name, 1),
                dependency="redis",
                what="read_alert_outbox",
                backoff=self._backoff,
            )
            if not items:
                await self._resend_when_due()
                await asyncio.sleep(self._poll_s)
                continue
            head = items[0]
            await self._deliver(head)
            await retry_until_done(
                functools.partial(self._store.drop_delivered, name, head),
                dependency="redis",
                what="ack_alert_outbox",
                backoff=self._backoff,
            )

    async def _deliver(self, item: bytes) -> None:
        name = self._receiver.name
        try:
            alert = Alert.model_validate_json(item)
        except ValidationError as exc:
            log.error("alert_outbox_unreadable", receiver=name, error=str(exc).splitlines()[0])
            return
        try:
            await retry_until_done(
                lambda: self._receiver.deliver(alert),
                dependency=name,
                what="deliver_alert",
                backoff=self._backoff,
                transient=RECEIVER_ERRORS,
            )
        except ReceiverRejected as exc:
            log.error(
                "alert_rejected", receiver=name, fingerprint=alert.fingerprint, error=str(exc)
            )
            return
        ALERTS_DELIVERED.labels(name, alert.status).inc()
        log.info(
            "alert_delivered",
            receiver=name,
            rule=alert.rule,
            status=alert.status,
            fingerprint=alert.fingerprint,
        )

    async def _resend_when_due(self) -> None:
        # Only Alertmanager forgets a firing alert that is not sent again.
        receiver = self._receiver
        if not isinstance(receiver, AlertmanagerReceiver):
            return
        if time.monotonic() - self._last_resend < self._resend_s:
            return
        self._last_resend = time.monotonic()
        open_alerts = await retry_until_done(
            self._store.open_alerts,
            dependency="redis",
            what="read_open_alerts",
            backoff=self._backoff,
        )
        try:
            await retry_until_done(
                lambda: receiver.resend(list(open_alerts.values())),
                dependency=receiver.name,
                what="resend_alerts",
                backoff=self._backoff,
                transient=RECEIVER_ERRORS,
            )
        except ReceiverRejected as exc:
            log.error("alert_resend_rejected", receiver=receiver.name, error=str(exc))
