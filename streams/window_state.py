"""Window state: the types a window state holds, the ``WindowState`` contract, and the
folding of records into the contributions a state applies.

The windows are plain logic over a state interface (``WindowState``): ``fold_partition``
decides, for each record, which window it belongs to and what it adds there; the state
applies those contributions effectively once (``streams.window_store`` in Redis; a dict in
the unit tests) and hands back the changed windows, which the window agent
(``streams.windows``) renders as ``WindowStats`` and re-emits.

Time (docs/decisions/0008-window-state.md): no wall clock decides anything here. Each record
is judged by clocks it carries itself, so that any worker, in any batch, after any restart,
judges it the same way:

- grace ("too late"): a verdict or dead letter is too late when its event time is more than
  ``grace`` behind the watermark of its partition (the largest event time applied on that
  partition so far); a label is too late when its event's time is more than ``grace``
  behind the label's own ``curated_at``;
- the future clamp: an event time ahead of the producer's clock (``scored_at``,
  ``dead_lettered_at``, ``curated_at``) by more than ``future_allowance`` is moved back to
  that clock plus the allowance and counted as clamped, so one bad clock cannot drag the
  watermark ahead and close windows early.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from pydantic import TypeAdapter, ValidationError

from l2loop.infra.topics import CURATED_EXAMPLES, SCAN_EVENTS_DLQ, SCAN_VERDICTS
from l2loop.logs import get_logger
from l2loop.schemas.common import EventTime
from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord, dead_letter, decode_record
from l2loop.schemas.reports import CuratedExample
from l2loop.schemas.verdicts import Verdict
from l2loop.schemas.windows import WindowStats
from l2loop.settings import Settings
from l2loop.stats import latency_bucket

log = get_logger(__name__)

# Hour-level figures that no model version owns (dead letters, model failures) live in a
# pseudo-window of this name; an hour with dead letters and no verdict at all is shown
# under NO_MODEL, so a model that fails on everything is still visible.
HOUR = "*"
NO_MODEL = "none"

# Counter fields of a version window and of an hour.
EVENTS, FLAGGED, SUPPRESSED = "events", "flagged", "suppressed"
GT_BENIGN, GT_MALICIOUS, FP, TP = "gt_benign", "gt_malicious", "fp", "tp"
REPORTED_FP, REPORTED_FN = "reported_fp", "reported_fn"
LATE, CLAMPED = "late", "clamped"
VERDICTS, DEAD_LETTERS, FAILED = "verdicts", "dead_letters", "failed"
MODEL_HIST, E2E_HIST = "m:", "e:"

# Scorer duplicates are looked for among the records of the same hour of event time (their
# own ts, never clamped), whatever the window size.
DEDUPE_BUCKET_MS = 3_600_000

_EVENT_TIME: TypeAdapter[datetime] = TypeAdapter(EventTime)

# ---------------------------------------------------------------------------------------
# Placing records in windows.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowConfig:
    size_ms: int
    grace_ms: int
    future_allowance_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowConfig:
        return cls(
            size_ms=settings.window_size_s * 1000,
            grace_ms=settings.window_grace_s * 1000,
            future_allowance_ms=settings.window_future_allowance_s * 1000,
        )

    def start_of(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.size_ms


@dataclass(frozen=True, slots=True)
class Placement:
    ts_ms: int  # after the clamp
    start_ms: int
    clamped: bool
    late: bool


def epoch_ms(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000)


def place(
    ts_ms: int, *, clock_ms: int, now_ms: int | None, config: WindowConfig
) -> Placement | None:
    """The window of an event time, or None when it is older than the grace.

    ``clock_ms`` is the producer's clock (the future clamp), ``now_ms`` the time the grace
    counts back from (a watermark, or a label's acceptance time; None before the first).
    """
    clamped = ts_ms > clock_ms + config.future_allowance_ms
    if clamped:
        ts_ms = clock_ms + config.future_allowance_ms
    if now_ms is not None and ts_ms < now_ms - config.grace_ms:
        return None
    start = config.start_of(ts_ms)
    late = now_ms is not None and start + config.size_ms <= now_ms
    return Placement(ts_ms, start, clamped, late)


@dataclass(frozen=True, slots=True)
class Observation:
    """One record's contribution: counters added to a version window and to its hour.

    ``dedupe_set``/``member``: the contribution is applied only if ``member`` is new in that
    set, so that a record the scorer emitted twice, or an event reported twice, counts once.
    """

    start_ms: int
    version: str | None
    counts: Mapping[str, int]
    hour_counts: Mapping[str, int]
    dedupe_set: str
    member: str
    # Seen-sets of scorer duplicates live for a short while; label sets as long as windows.
    short_lived: bool

    def shape(self) -> dict[str, Any]:
        """What the observation adds, without its member: many records share one."""
        body: dict[str, Any] = {"s": self.start_ms // 1000}
        if self.version is not None:
            body["v"] = self.version
            body["c"] = dict(self.counts)
        if self.hour_counts:
            body["h"] = dict(self.hour_counts)
        return body


def digest(*parts: str) -> str:
    # 8 bytes of blake2b: dedupe members stay small; a collision within one hour's events
    # (~n²/2^65) is negligible at any traffic this loop sees.
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class SourcePartition:
    topic: str
    partition: int

    @property
    def name(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True, slots=True)
class PartitionMark:
    """What a state holds per source partition: the last applied offset and its watermark."""

    offset: int = -1
    watermark_ms: int | None = None


@dataclass
class PartitionDelta:
    """Everything a run of records of one partition adds, applied together with its mark."""

    source: SourcePartition
    first_offset: int
    last_offset: int
    watermark_ms: int | None
    observations: list[Observation] = field(default_factory=list)
    # Effectively-once totals that belong to no window: too_late:<kind>, rejected:<reason>
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def to_json(self) -> dict[str, Any]:
        """The delta for the state's script: the distinct shapes of contribution, and per
        dedupe set its members, each with the index of its shape. A member's later
        observations in the delta are left out: only its first could count."""
        shapes: dict[tuple[Any, ...], int] = {}
        bodies: list[dict[str, Any]] = []
        sets: dict[tuple[str, bool], dict[str, Any]] = {}
        taken: set[tuple[str, str]] = set()
        for o in self.observations:
            if (o.dedupe_set, o.member) in taken:
                continue
            taken.add((o.dedupe_set, o.member))
            shape = (o.start_ms, o.version, tuple(o.counts.items()), tuple(o.hour_counts.items()))
            index = shapes.get(shape)
            if index is None:
                index = shapes[shape] = len(bodies)
                bodies.append(o.shape())
            members = sets.get((o.dedupe_set, o.short_lived))
            if members is None:
                members = sets[(o.dedupe_set, o.short_lived)] = {
                    "d": o.dedupe_set,
                    "x": int(o.short_lived),
                    "m": [],
                    "k": [],
                }
            members["m"].append(o.member)
            members["k"].append(index)
        return {
            "src": self.source.name,
            "first": self.first_offset,
            "last": self.last_offset,
            "wm": self.watermark_ms,
            "shapes": bodies,
            "sets": list(sets.values()),
            "tot": dict(self.totals),
        }


class RecordKind:
    VERDICT = "verdict"
    DEAD_LETTER = "dead_letter"
    LABEL = "label"


def _verdict_observation(verdict: Verdict, placement: Placement) -> Observation:
    flagged = verdict.is_threat and not verdict.suppressed
    truth = verdict.ground_truth
    if truth is None:
        counts = {EVENTS: 1, FLAGGED: int(flagged), SUPPRESSED: int(verdict.suppressed)}
    elif truth.label == 1:
        counts = {GT_MALICIOUS: 1, TP: int(flagged)}
    else:
        counts = {GT_BENIGN: 1, FP: int(flagged)}
    counts[LATE] = int(placement.late)
    counts[CLAMPED] = int(placement.clamped)
    e2e_ms = (verdict.scored_at - verdict.ts).total_seconds() * 1000.0
    counts[MODEL_HIST + str(latency_bucket(verdict.model_ms))] = 1
    counts[E2E_HIST + str(latency_bucket(e2e_ms))] = 1
    return Observation(
        start_ms=placement.start_ms,
        version=verdict.model_version,
        counts={name: n for name, n in counts.items() if n},
        hour_counts={VERDICTS: 1},
        # A rescored duplicate has another scored_at, so its clamp may differ, never its ts.
        dedupe_set=f"seen:{epoch_ms(verdict.ts) // DEDUPE_BUCKET_MS}",
        member=digest("v", verdict.event_id),
        short_lived=True,
    )


def _dead_letter_time(letter: DeadLetter) -> int:
    """The event time of the dead-lettered input where it has one, else when it died."""
    try:
        payload = orjson.loads(letter.raw)
        if isinstance(payload, dict) and "ts" in payload:
            return epoch_ms(_EVENT_TIME.validate_python(payload["ts"]))
    except (orjson.JSONDecodeError, ValidationError, ValueError, OverflowError):
        pass
    return epoch_ms(letter.dead_lettered_at)


def _dead_letter_observation(letter: DeadLetter, ts_ms: int, placement: Placement) -> Observation:
    return Observation(
        start_ms=placement.start_ms,
        version=None,
        counts={},
        hour_counts={
            DEAD_LETTERS: 1,
            **({FAILED: 1} if letter.reason is DeadLetterReason.SCORING_FAILED else {}),
        },
        dedupe_set=f"seen:{ts_ms // DEDUPE_BUCKET_MS}",
        member=digest("d", letter.source_topic, str(letter.partition), str(letter.offset)),
        short_lived=True,
    )


def _label_observation(label: CuratedExample, placement: Placement) -> Observation | None:
    if label.report_kind == "confirmed_threat":
        return None  # confirms what the model said; no window figure counts it
    counter = REPORTED_FP if label.report_kind == "false_positive" else REPORTED_FN
    key = f"{placement.start_ms // 1000}|{label.model_version}"
    return Observation(
        start_ms=placement.start_ms,
        version=label.model_version,
        counts={counter: 1},
        hour_counts={},
        # However many reports an event gets, it counts once in its window.
        dedupe_set=f"{counter}:{key}",
        member=digest(label.event_id),
        short_lived=False,
    )


@dataclass(frozen=True, slots=True)
class WindowTopics:
    verdicts: str
    dead_letters: str
    labels: str

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowTopics:
        return cls(
            verdicts=settings.topic(SCAN_VERDICTS),
            dead_letters=settings.topic(SCAN_EVENTS_DLQ),
            labels=settings.topic(CURATED_EXAMPLES),
        )


def fold_partition(
    source: SourcePartition,
    records: Sequence[RawRecord],
    mark: PartitionMark,
    config: WindowConfig,
    topics: WindowTopics,
) -> PartitionDelta | None:
    """What the records of one partition after ``mark`` add; None when all were applied.

    ``records`` are in offset order. The watermark advances record by record, so each
    record is judged exactly as it would be in any other batching of the same partition.
    """
    fresh = [record for record in records if record.offset > mark.offset]
    if not fresh:
        return None
    delta = PartitionDelta(source, fresh[0].offset, fresh[-1].offset, mark.watermark_ms)
    for record in fresh:
        observation = _observe(record, delta, config, topics)
        if observation is not None:
            delta.observations.append(observation)
    return delta


def _reject(delta: PartitionDelta, topic: str, letter: DeadLetter) -> None:
    delta.totals[f"rejected:{letter.reason.value}"] += 1
    log.warning(
        "window_record_rejected",
        topic=topic,
        partition=letter.partition,
        offset=letter.offset,
        reason=letter.reason.value,
        error=letter.error[:300],
    )


def _usable_version(
    record: RawRecord, labelled: Verdict | CuratedExample, delta: PartitionDelta
) -> bool:
    """A model version that cannot be told apart from the pseudo-versions is rejected."""
    version = labelled.model_version
    if version and version not in (HOUR, NO_MODEL) and "|" not in version:
        return True
    _reject(
        delta,
        record.topic,
        dead_letter(record, DeadLetterReason.INVALID_VALUE, f"unusable model_version {version!r}"),
    )
    return False


def _observe(
    record: RawRecord, delta: PartitionDelta, config: WindowConfig, topics: WindowTopics
) -> Observation | None:
    if record.topic == topics.labels:
        return _observe_label(record, delta, config)
    if record.topic == topics.verdicts:
        return _observe_verdict(record, delta, config)
    return _observe_dead_letter(record, delta, config)


def _advance(
    delta: PartitionDelta, ts_ms: int, clock_ms: int, config: WindowConfig, kind: str
) -> Placement | None:
    """Places a verdict or dead letter and moves its partition's watermark."""
    placement = place(ts_ms, clock_ms=clock_ms, now_ms=delta.watermark_ms, config=config)
    if placement is None:
        delta.totals[f"too_late:{kind}"] += 1
        return None
    if delta.watermark_ms is None or placement.ts_ms > delta.watermark_ms:
        delta.watermark_ms = placement.ts_ms
    return placement


def _observe_verdict(
    record: RawRecord, delta: PartitionDelta, config: WindowConfig
) -> Observation | None:
    verdict = decode_record(record, Verdict)
    if isinstance(verdict, DeadLetter):
        _reject(delta, record.topic, verdict)
        return None
    if not _usable_version(record, verdict, delta):
        return None
    placement = _advance(
        delta, epoch_ms(verdict.ts), epoch_ms(verdict.scored_at), config, RecordKind.VERDICT
    )
    return None if placement is None else _verdict_observation(verdict, placement)


def _observe_dead_letter(
    record: RawRecord, delta: PartitionDelta, config: WindowConfig
) -> Observation | None:
    letter = decode_record(record, DeadLetter)
    if letter.source_topic == record.topic:
        # Not a dead letter of the scorer's: the DLQ's own record was unreadable.
        _reject(delta, record.topic, letter)
        return None
    ts_ms = _dead_letter_time(letter)
    placement = _advance(
        delta, ts_ms, epoch_ms(letter.dead_lettered_at), config, RecordKind.DEAD_LETTER
    )
    return None if placement is None else _dead_letter_observation(letter, ts_ms, placement)


def _observe_label(
    record: RawRecord, delta: PartitionDelta, config: WindowConfig
) -> Observation | None:
    label = decode_record(record, CuratedExample)
    if isinstance(label, DeadLetter):
        _reject(delta, record.topic, label)
        return None
    if not _usable_version(record, label, delta):
        return None
    # Labels are late by nature and do not move the watermark; the grace counts back from
    # when the label was accepted.
    accepted = epoch_ms(label.curated_at)
    placement = place(epoch_ms(label.event_ts), clock_ms=accepted, now_ms=accepted, config=config)
    if placement is None:
        delta.totals[f"too_late:{RecordKind.LABEL}"] += 1
        return None
    return _label_observation(label, placement)


# ---------------------------------------------------------------------------------------
# State: where contributions are applied, effectively once.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """A window's counters after an apply, with its hour's, ready to render."""

    start_ms: int
    version: str
    revision: int
    counts: Mapping[str, int]
    hour_counts: Mapping[str, int]


@dataclass
class ApplyOutcome:
    # Windows touched by the deltas, applied now or found applied before (then unchanged).
    windows: list[WindowCounts] = field(default_factory=list)
    # Partitions another applier moved past this delta's first offset: fold them again.
    conflicts: list[SourcePartition] = field(default_factory=list)


class WindowState(Protocol):
    """The contract ``streams.window_store.RedisWindowState`` implements.

    ``apply`` applies each delta atomically with its partition's mark, and only if the
    mark is below the delta's first offset; a delta at or below the mark is skipped (its
    windows are still returned, to be rendered again); one that overlaps the mark is a
    conflict. Each observation counts only if its member is new in its dedupe set. Every
    window a delta changes gets revision + 1, and with it every model version's window of an
    hour whose hour counters changed.
    """

    async def marks(
        self, sources: Sequence[SourcePartition]
    ) -> dict[SourcePartition, PartitionMark]: ...

    async def apply(self, deltas: Sequence[PartitionDelta]) -> ApplyOutcome: ...

    async def save_latest(self, stats: Sequence[WindowStats]) -> None: ...
