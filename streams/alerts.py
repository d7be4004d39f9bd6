"""The alert evaluator: window-stats in, alert state changes into Redis and its outboxes.

Each batch costs two Redis round trips: one reads the open alerts and the trailing windows
the flag-rate rule needs, one records every change (l2loop.stores.alerts); a third only
while an alert of a model version that may have been replaced is open. Receivers are fed
from the outboxes by background tasks (streams.alert_sinks), never from the stream, so a
receiver that is down cannot hold up the windows.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, cast

import faust
import httpx
from faust.streams import Stream
from prometheus_client import Counter, Gauge

from l2loop.infra.clients import Publish
from l2loop.infra.topics import ALERTS, WINDOW_STATS
from l2loop.logs import get_logger
from l2loop.resilience import crash_only, retry_until_done
from l2loop.schemas.dead_letters import DeadLetter
from l2loop.schemas.decoding import RawRecord, decode_record, raw_records
from l2loop.schemas.windows import Alert, WindowStats, window_field
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore
from l2loop.stores.verdicts import connect
from l2loop.streams.alert_rules import (
    RULES,
    Evaluation,
    Thresholds,
    alert_changes,
    evaluate_window,
    following_starts,
    trailing_starts,
)
from l2loop.streams.alert_sinks import (
    LEASE_TTL_S,
    AlertmanagerReceiver,
    AlertReceiver,
    Lease,
    OutboxDrainer,
    TopicReceiver,
    WebhookReceiver,
)

log = get_logger(__name__)

# Stored windows after each evaluated one that are judged with it (see AlertEvaluator).
FOLLOWING_WINDOWS = 2

ALERTS_OPEN = Gauge("l2loop_alerts_open", "firing alerts, by rule", ["rule"])
ALERT_CHANGES = Counter(
    "l2loop_alert_changes_total", "alert state changes this process made", ["rule", "status"]
)
WINDOWS_UNREADABLE = Counter(
    "l2loop_window_stats_unreadable_total", "window-stats records that could not be decoded"
)


def decode_window_stats(record: RawRecord) -> WindowStats | DeadLetter:
    """Whatever bytes arrive: a WindowStats, or a DeadLetter saying why not."""
    return decode_record(record, WindowStats)


def latest_revisions(windows: Sequence[WindowStats]) -> list[WindowStats]:
    """Per window, only the highest revision a batch holds: earlier ones are superseded."""
    latest: dict[str, WindowStats] = {}
    for window in windows:
        key = window_field(window.window_start, window.model_version)
        if key not in latest or latest[key].revision < window.revision:
            latest[key] = window
    return list(latest.values())


class AlertEvaluator:
    """Evaluates batches of windows against the rules and records the changes."""

    def __init__(self, store: AlertStore, limits: Thresholds) -> None:
        self._store = store
        self._limits = limits

    def _trailing_fields(self, window: WindowStats) -> list[str]:
        return [
            window_field(start, window.model_version)
            for start in trailing_starts(window, self._limits.flag_rate_trailing)
        ]

    async def _known_windows(
        self,
        evaluated: Sequence[tuple[WindowStats, Sequence[Evaluation]]],
        open_alerts: Mapping[str, Alert],
        known: Mapping[str, WindowStats],
    ) -> set[str]:
        """The window fields that exist among those that tell whether a clear window of one
        model version replaced the version of an open alert (alert_rules.replaced). Only
        while an open alert of another version is older than a clear window does this cost
        a third round trip."""
        asked = {
            window_field(window.window_start, alert.model_version)
            for window, evaluations in evaluated
            if any(evaluation.reading == "clear" for evaluation in evaluations)
            for alert in open_alerts.values()
            if alert.model_version != window.model_version
            and alert.window_start < window.window_start
        }
        missing = sorted(asked - known.keys())
        found = await self._store.windows(missing) if missing else []
        return {
            *known.keys(),
            *(window_field(w.window_start, w.model_version) for w in found),
        }

    async def evaluate(self, windows: Sequence[WindowStats]) -> list[Alert]:
        """Returns the changes this call made (another evaluator may have made the rest)."""
        windows = latest_revisions(windows)
        if not windows:
            return []
        # Windows travel on several partitions, so a spike's window may be read after the
        # window that ends it: the stored windows right after each one are judged as well.
        later = [
            window_field(start, w.model_version)
            for w in windows
            for start in following_starts(w, FOLLOWING_WINDOWS)
        ]
        wanted = {
            *(window_field(w.window_start, w.model_version) for w in windows),
            *later,
            *(field for w in windows for field in self._trailing_fields(w)),
        }
        open_alerts, known = await self._store.open_and_windows(sorted(wanted))
        judged: dict[str, WindowStats] = {}
        for window in [*windows, *(known[field] for field in later if field in known)]:
            field = window_field(window.window_start, window.model_version)
            # A revision that arrives after a newer one (another partition, a replay) is
            # judged by the newest the window agent has stored, never by its stale self.
            newest = known.get(field)
            if newest is not None and newest.revision > window.revision:
                window = newest
            if field not in judged or judged[field].revision < window.revision:
                judged[field] = window
        evaluated = [
            (
                window,
                evaluate_window(
                    window,
                    [known[f] for f in self._trailing_fields(window) if f in known],
                    self._limits,
                ),
            )
            for window in judged.values()
        ]
        known_windows = await self._known_windows(evaluated, open_alerts, known)
        made = await self._store.apply(alert_changes(evaluated, open_alerts, known_windows))
        for alert in made:
            ALERT_CHANGES.labels(alert.rule, alert.status).inc()
            log.warning(
                "alert_firing" if alert.status == "firing" else "alert_resolved",
                rule=alert.rule,
                window_start=alert.labels["window_start"],
                model_version=alert.model_version,
                value=round(alert.value, 6),
                threshold=round(alert.threshold, 6),
                bound=None if alert.bound is None else round(alert.bound, 6),
                samples=alert.samples,
                fingerprint=alert.fingerprint,
            )
        return made


def _generator_url(settings: Settings) -> str:
    return settings.api_public_url or ""


def alert_receivers(
    settings: Settings, publish: Publish, http: httpx.AsyncClient
) -> list[AlertReceiver]:
    """The receivers the settings ask for; the alerts topic always."""
    receivers: list[AlertReceiver] = [TopicReceiver(publish, settings.topic(ALERTS))]
    if settings.alertmanager_url:
        receivers.append(
            AlertmanagerReceiver(
                http, settings.alertmanager_url, settings.alert_resend_s, _generator_url(settings)
            )
        )
    if settings.alert_webhook_url:
        receivers.append(
            WebhookReceiver(http, settings.alert_webhook_url, _generator_url(settings))
        )
    return receivers


def register_alert_agent(app: faust.App, settings: Settings) -> None:
    """Declares the alert evaluator on ``app`` and one outbox task per receiver."""
    redis_client = connect(settings.redis_dsn)
    http = httpx.AsyncClient(timeout=settings.alert_receiver_timeout_s)

    async def publish(topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        return await app.producer.send(topic, key, value, None, None, None)

    receivers = alert_receivers(settings, publish, http)
    store = AlertStore(
        redis_client,
        key_prefix=settings.topic_prefix,
        receivers=[receiver.name for receiver in receivers],
        history=settings.alert_history,
        outbox_max=settings.alert_outbox_max,
    )
    evaluator = AlertEvaluator(store, Thresholds.from_settings(settings))
    owner = f"{settings.app_id}:{uuid.uuid4().hex[:12]}"
    source = app.topic(
        settings.topic(WINDOW_STATS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    for receiver in receivers:
        drainer = OutboxDrainer(
            store,
            receiver,
            Lease(
                redis_client,
                store.outbox_key(receiver.name) + ":lease",
                owner,
                ttl_s=LEASE_TTL_S,
                backoff=settings.backoff,
            ),
            backoff=settings.backoff,
            poll_s=settings.alert_outbox_poll_s,
            resend_s=settings.alert_resend_s,
        )
        app.task(crash_only(f"alert_outbox_{receiver.name}")(drainer.run))

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    @crash_only("alert_gauges")
    async def publish_alert_gauges() -> None:
        open_alerts = await retry_until_done(
            store.open_alerts, dependency="redis", what="read_open_alerts", backoff=settings.backoff
        )
        for rule in RULES:
            ALERTS_OPEN.labels(rule).set(sum(a.rule == rule for a in open_alerts.values()))

    @app.agent(source, name="alerts")
    @crash_only("alerts")
    async def evaluate_alerts(stream: faust.StreamT[bytes]) -> None:
        log.info("alert_agent_started", receivers=",".join(r.name for r in receivers))
        batches = cast(Stream[bytes], stream).take_events(
            settings.batch_size, settings.batch_within_s
        )
        async for events in batches:
            windows = []
            for record in raw_records(events):
                decoded = decode_window_stats(record)
                if isinstance(decoded, DeadLetter):
                    WINDOWS_UNREADABLE.inc()
                    log.error(
                        "window_stats_unreadable",
                        reason=decoded.reason.value,
                        error=decoded.error,
                        partition=decoded.partition,
                        offset=decoded.offset,
                    )
                else:
                    windows.append(decoded)
            await retry_until_done(
                functools.partial(evaluator.evaluate, windows),
                dependency="redis",
                what="evaluate_alerts",
                backoff=settings.backoff,
            )
