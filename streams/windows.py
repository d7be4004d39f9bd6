"""The window agent: event-time tumbling windows of verdicts, dead letters and labels.

Each batch is folded per source partition into contributions (``streams.window_state``),
applied effectively once by the state (``streams.window_store`` in Redis), and every window
it changed is rendered as ``WindowStats``, saved as the latest, re-emitted on window-stats
and shown as Prometheus gauges.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial

import faust
from prometheus_client import Counter, Gauge

from l2loop.infra.clients import batch_sender, started_producer
from l2loop.infra.topics import WINDOW_STATS
from l2loop.logs import get_logger
from l2loop.resilience import Backoff, crash_only, retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.windows import WindowStats, window_field
from l2loop.settings import Settings
from l2loop.stats import quantiles, rate
from l2loop.stores.verdicts import connect
from l2loop.streams.consumer import BatchConsumer, Previous, StartedWithWorker, consumer_group
from l2loop.streams.sharing import SCORING
from l2loop.streams.window_state import (
    CLAMPED,
    DEAD_LETTERS,
    E2E_HIST,
    EVENTS,
    FAILED,
    FLAGGED,
    FP,
    GT_BENIGN,
    GT_MALICIOUS,
    LATE,
    MODEL_HIST,
    REPORTED_FN,
    REPORTED_FP,
    SUPPRESSED,
    TP,
    VERDICTS,
    PartitionDelta,
    PartitionMark,
    RecordKind,
    SourcePartition,
    WindowConfig,
    WindowCounts,
    WindowState,
    WindowTopics,
    fold_partition,
)
from l2loop.streams.window_store import RedisWindowState

log = get_logger(__name__)

TOO_LATE = Counter(
    "l2loop_window_too_late_total",
    "records older than the grace period, counted in no window",
    ["kind"],
)
REJECTED = Counter(
    "l2loop_window_records_rejected_total",
    "records on the window agent's topics that could not be decoded",
    ["topic", "reason"],
)
CLAMPED_FUTURE = Counter(
    "l2loop_window_clamped_future_total",
    "event times ahead of their producer's clock, clamped back",
    ["kind"],
)


# ---------------------------------------------------------------------------------------
# Rendering: a window's counters as the WindowStats it publishes.
# ---------------------------------------------------------------------------------------


def _histogram(counts: Mapping[str, int], prefix: str) -> dict[int, int]:
    return {int(name[len(prefix) :]): n for name, n in counts.items() if name.startswith(prefix)}


def _as_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def render(window: WindowCounts, config: WindowConfig) -> WindowStats:
    c, h = window.counts, window.hour_counts

    def n(name: str) -> int:
        return int(c.get(name, 0))

    events = n(EVENTS)
    return WindowStats(
        window_start=_as_time(window.start_ms),
        window_end=_as_time(window.start_ms + config.size_ms),
        model_version=window.version,
        revision=max(1, window.revision),
        events=events,
        flagged=n(FLAGGED),
        suppressed=n(SUPPRESSED),
        flag_rate=rate(n(FLAGGED), events),
        canary_fp_rate=rate(n(FP), n(GT_BENIGN)),
        recall=rate(n(TP), n(GT_MALICIOUS)),
        reported_fp_rate=rate(n(REPORTED_FP), events),
        reported_fn=n(REPORTED_FN),
        dead_letters=int(h.get(DEAD_LETTERS, 0)),
        error_rate=rate(int(h.get(FAILED, 0)), int(h.get(VERDICTS, 0)) + int(h.get(FAILED, 0))),
        model_latency_ms=quantiles(_histogram(c, MODEL_HIST)),
        e2e_latency_ms=quantiles(_histogram(c, E2E_HIST)),
        late_events=n(LATE),
        clamped_future=n(CLAMPED),
    )


# ---------------------------------------------------------------------------------------
# Prometheus: the newest window this worker rendered, per model version.
# ---------------------------------------------------------------------------------------
_GAUGES = {
    name: Gauge(f"l2loop_window_{name}", text, ["model_version"])
    for name, text in {
        "start_seconds": "start of the newest window rendered (epoch seconds)",
        "events": "production events in the newest window",
        "flag_rate": "flagged / production events",
        "canary_fp_rate": "flagged canary-benign / canary-benign",
        "recall": "flagged canary-malicious / canary-malicious",
        "reported_fp_rate": "events with an accepted FP report / events",
        "error_rate": "model failures / events attempted, in the window's hour",
        "model_latency_p95_ms": "p95 model time per prompt",
        "e2e_latency_p95_ms": "p95 event time to verdict",
    }.items()
}
_newest_start: dict[str, float] = {}


def export_gauges(stats: Iterable[WindowStats]) -> None:
    for window in stats:
        start = window.window_start.timestamp()
        version = window.model_version
        if start < _newest_start.get(version, float("-inf")):
            continue
        _newest_start[version] = start
        figures: dict[str, float | None] = {
            "start_seconds": start,
            "events": window.events,
            "flag_rate": window.flag_rate.value,
            "canary_fp_rate": window.canary_fp_rate.value,
            "recall": window.recall.value,
            "reported_fp_rate": window.reported_fp_rate.value,
            "error_rate": window.error_rate.value,
            "model_latency_p95_ms": window.model_latency_ms.p95,
            "e2e_latency_p95_ms": window.e2e_latency_ms.p95,
        }
        for name, value in figures.items():
            _GAUGES[name].labels(version).set(math.nan if value is None else value)


# ---------------------------------------------------------------------------------------
# One batch: fold, apply, render.
# ---------------------------------------------------------------------------------------


class WindowAggregator:
    def __init__(
        self,
        state: WindowState,
        config: WindowConfig,
        topics: WindowTopics,
        backoff: Backoff,
    ) -> None:
        self._state = state
        self._config = config
        self._topics = topics
        self._backoff = backoff

    async def apply(self, records: Sequence[RawRecord]) -> list[WindowStats]:
        """Applies a batch (any topics, any partitions); returns the windows it changed."""
        pending: dict[SourcePartition, list[RawRecord]] = defaultdict(list)
        for record in records:
            pending[SourcePartition(record.topic, record.partition)].append(record)
        for run in pending.values():
            run.sort(key=lambda record: record.offset)
        touched: dict[tuple[int, str], WindowCounts] = {}
        while pending:
            sources = list(pending)
            marks = await retry_until_done(
                partial(self._state.marks, sources),
                dependency="redis",
                what="window_marks",
                backoff=self._backoff,
            )
            # Decoding and folding are CPU work: off the event loop the agents share.
            deltas = await asyncio.to_thread(self._fold, pending, marks)
            if not deltas:
                break
            outcome = await retry_until_done(
                partial(self._state.apply, deltas),
                dependency="redis",
                what="window_apply",
                backoff=self._backoff,
            )
            for window in outcome.windows:
                name = (window.start_ms, window.version)
                seen = touched.get(name)
                if seen is None or window.revision >= seen.revision:
                    touched[name] = window
            for delta in deltas:
                if delta.source not in outcome.conflicts:
                    self._count(delta)
            pending = {source: pending[source] for source in outcome.conflicts}
        stats = [render(window, self._config) for window in touched.values()]
        if stats:
            await retry_until_done(
                lambda: self._state.save_latest(stats),
                dependency="redis",
                what="window_save_latest",
                backoff=self._backoff,
            )
        export_gauges(stats)
        return stats

    def _fold(
        self,
        pending: Mapping[SourcePartition, Sequence[RawRecord]],
        marks: Mapping[SourcePartition, PartitionMark],
    ) -> list[PartitionDelta]:
        deltas = []
        for source, records in pending.items():
            delta = fold_partition(source, records, marks[source], self._config, self._topics)
            if delta is not None:
                deltas.append(delta)
        return deltas

    @staticmethod
    def _count(delta: PartitionDelta) -> None:
        for name, n in delta.totals.items():
            what, _, detail = name.partition(":")
            if what == "too_late":
                TOO_LATE.labels(detail).inc(n)
            else:
                REJECTED.labels(delta.source.topic, detail).inc(n)
        clamped = sum(o.counts.get(CLAMPED, 0) for o in delta.observations)
        if clamped:
            CLAMPED_FUTURE.labels(RecordKind.VERDICT).inc(clamped)


# ---------------------------------------------------------------------------------------
# The Faust agent.
# ---------------------------------------------------------------------------------------


def register_window_agent(app: faust.App, settings: Settings) -> None:
    """Declares the window agent: verdicts, dead letters, labels -> window-stats + Redis.

    It reads in batches with a consumer of its own, like the score agent, rather than
    through Faust: after a backlog Faust's per-record machinery (a task, a channel put and an
    acknowledgement per verdict) held the worker's loop as long as the counting did. It
    yields to scoring between batches (streams.sharing). Its state applies each record
    effectively once (decision 0008), so the consumer's at-least-once replays count nothing
    twice.
    """
    topics = WindowTopics.from_settings(settings)
    config = WindowConfig.from_settings(settings)
    state = RedisWindowState(
        connect(settings.redis_dsn),
        key_prefix=settings.topic_prefix,
        window_ttl_s=settings.window_grace_s + settings.window_size_s + 24 * 3600,
        dedupe_ttl_s=settings.window_dedupe_ttl_s,
    )
    aggregator = WindowAggregator(state, config, topics, settings.backoff)
    consumer = BatchConsumer(
        settings,
        [topics.verdicts, topics.dead_letters, topics.labels],
        group_id=consumer_group(settings, "windows"),
        batch_size=settings.batch_size,
        within_s=settings.batch_within_s,
        # One batch at a time: a batch's windows are re-emitted before the next one's.
        in_flight=1,
        carry_from=settings.app_id,
    )
    stats_topic = settings.topic(WINDOW_STATS)

    @crash_only("windows")
    async def windows() -> None:
        async with started_producer(settings) as producer:
            publish_many = batch_sender(producer)

            async def publish(stats: Sequence[WindowStats]) -> None:
                delivery = await publish_many(
                    stats_topic,
                    [
                        (
                            window_field(window.window_start, window.model_version).encode(),
                            to_bytes(window),
                        )
                        for window in stats
                    ],
                )
                await delivery

            async def count(records: Sequence[RawRecord], previous: Previous) -> None:
                await previous()
                began = time.monotonic()
                stats = await aggregator.apply(records)
                if stats:
                    await retry_until_done(
                        partial(publish, stats),
                        dependency="kafka",
                        what="window_stats_publish",
                        backoff=settings.backoff,
                    )
                log.debug("window_batch_applied", records=len(records), windows=len(stats))
                # A backlog of verdicts must not hold the scoring of new events back.
                await SCORING.make_way(time.monotonic() - began)

            def started() -> None:
                log.info(
                    "window_agent_started",
                    window_s=settings.window_size_s,
                    grace_s=settings.window_grace_s,
                )

            try:
                await consumer.run(count, started=started)
            finally:
                await state.close()

    app.add_dependency(StartedWithWorker(windows))
