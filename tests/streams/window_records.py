"""Records the window agent reads, built for tests: verdicts, dead letters, labels."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from l2loop.schemas.codec import to_bytes
from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason
from l2loop.schemas.events import GroundTruth
from l2loop.schemas.reports import CuratedExample, ReportKind
from l2loop.schemas.verdicts import Verdict
from l2loop.schemas.windows import WindowStats
from l2loop.streams.decoding import RawRecord
from l2loop.streams.windows import (
    ApplyOutcome,
    PartitionDelta,
    PartitionMark,
    SourcePartition,
    WindowConfig,
    WindowCounts,
    WindowTopics,
    window_field,
)
from l2model.record import TrainingRecord, text_key

TOPICS = WindowTopics(
    verdicts="l2.scan-verdicts", dead_letters="l2.scan-events.dlq", labels="l2.curated-examples"
)
HOUR_MS = 3_600_000
CONFIG = WindowConfig(size_ms=HOUR_MS, grace_ms=7 * 24 * HOUR_MS, future_allowance_ms=300_000)
# A Monday at midnight, so that hour arithmetic in tests reads plainly.
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def verdict(
    event_id: str,
    ts: datetime,
    *,
    flagged: bool = False,
    truth: int | None = None,
    version: str = "1.0.0",
    scored_at: datetime | None = None,
    model_ms: float = 1.0,
    suppressed: bool = False,
) -> Verdict:
    return Verdict(
        event_id=event_id,
        ts=ts,
        tenant_id="acme",
        model_version=version,
        score=0.9 if flagged else 0.1,
        threshold=0.5,
        is_threat=flagged,
        family="PI" if flagged else "benign",
        severity=0.8 if flagged else 0.0,
        context="attack" if flagged else "conversational",
        action="block" if flagged else "allow",
        latency_ms=model_ms * 10,
        model_ms=model_ms,
        truncated=False,
        suppressed=suppressed,
        scored_at=scored_at or ts + timedelta(milliseconds=40),
        ground_truth=None if truth is None else GroundTruth(label=truth, source="canary"),
    )


def dead_letter(
    ts: datetime, offset: int, *, reason: DeadLetterReason = DeadLetterReason.EMPTY_TEXT
) -> DeadLetter:
    raw = f'{{"event_id":"dl-{offset}","ts":"{ts.isoformat()}","tenant_id":"a","text":" "}}'
    return DeadLetter(
        reason=reason,
        error="text is empty",
        source_topic="l2.scan-events",
        partition=0,
        offset=offset,
        raw=raw.encode(),
        dead_lettered_at=ts + timedelta(seconds=1),
    )


def label(
    event_id: str,
    event_ts: datetime,
    curated_at: datetime,
    *,
    kind: ReportKind = "false_positive",
    version: str = "1.0.0",
    report_id: str = "r-1",
) -> CuratedExample:
    text = f"the text of {event_id}"
    if kind == "false_positive":
        record = TrainingRecord.build(
            text, "benign", "technical", severity=0.0, weight=5.0, confidence=0.9, source="prod"
        )
    else:
        record = TrainingRecord.build(
            text, "PI", "attack", severity=0.8, weight=5.0, confidence=0.9, source="prod"
        )
    return CuratedExample(
        **record.model_dump(),
        example_id=text_key(text),
        event_id=event_id,
        event_ts=event_ts,
        tenant_id="acme",
        report_kind=kind,
        report_ids=[report_id],
        reporter_count=1,
        model_version=version,
        model_score=0.9,
        curated_at=curated_at,
    )


def raw(topic: str, partition: int, offset: int, value: bytes) -> RawRecord:
    return RawRecord(topic, partition, offset, None, value)


def verdict_records(
    verdicts: Sequence[Verdict], partition: int = 0, first: int = 0
) -> list[RawRecord]:
    return [raw(TOPICS.verdicts, partition, first + i, to_bytes(v)) for i, v in enumerate(verdicts)]


class MemoryWindowState:
    """``WindowState`` in dictionaries, with the semantics of the Redis script."""

    def __init__(self) -> None:
        self.mark: dict[SourcePartition, PartitionMark] = {}
        self.windows: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.versions: dict[int, set[str]] = defaultdict(set)
        self.sets: dict[str, set[str]] = defaultdict(set)
        self.totals: dict[str, int] = defaultdict(int)
        self.latest: dict[str, WindowStats] = {}

    async def marks(
        self, sources: Sequence[SourcePartition]
    ) -> dict[SourcePartition, PartitionMark]:
        return {source: self.mark.get(source, PartitionMark()) for source in sources}

    async def apply(self, deltas: Sequence[PartitionDelta]) -> ApplyOutcome:
        outcome = ApplyOutcome()
        changed: set[tuple[int, str]] = set()
        reread: set[tuple[int, str]] = set()
        hours: dict[int, bool] = {}
        for delta in deltas:
            stored = self.mark.get(delta.source, PartitionMark()).offset
            if stored >= delta.last_offset:
                for o in delta.observations:
                    if o.version is None:
                        hours.setdefault(o.start_ms, False)
                    else:
                        reread.add((o.start_ms, o.version))
                continue
            if stored >= delta.first_offset:
                outcome.conflicts.append(delta.source)
                continue
            for o in delta.observations:
                if o.member in self.sets[o.dedupe_set]:
                    continue
                self.sets[o.dedupe_set].add(o.member)
                if o.version is not None:
                    for name, n in o.counts.items():
                        self.windows[(o.start_ms, o.version)][name] += n
                    self.versions[o.start_ms].add(o.version)
                    changed.add((o.start_ms, o.version))
                if o.hour_counts:
                    for name, n in o.hour_counts.items():
                        self.windows[(o.start_ms, "*")][name] += n
                    hours[o.start_ms] = True
            for name, n in delta.totals.items():
                self.totals[name] += n
            self.mark[delta.source] = PartitionMark(delta.last_offset, delta.watermark_ms)
        for start, moved in hours.items():
            for version in self.versions[start] or {"none"}:
                (changed if moved else reread).add((start, version))
        for key in changed:
            self.windows[key]["revision"] += 1
        for key in changed | reread:
            counts = dict(self.windows[key])
            outcome.windows.append(
                WindowCounts(
                    start_ms=key[0],
                    version=key[1],
                    revision=counts.pop("revision", 0),
                    counts=counts,
                    hour_counts=dict(self.windows[(key[0], "*")]),
                )
            )
        return outcome

    async def save_latest(self, stats: Sequence[WindowStats]) -> None:
        for window in stats:
            name = window_field(int(window.window_start.timestamp() * 1000), window.model_version)
            stored = self.latest.get(name)
            if stored is None or window.revision >= stored.revision:
                self.latest[name] = window
            if window.model_version != "none":
                self.latest.pop(name.split("|")[0] + "|none", None)
