"""The score agent: scan-events in, batched ONNX scoring off the event loop, verdicts out.

Every record ends in exactly one place: a Verdict on scan-verdicts, or a DeadLetter on
scan-events.dlq saying why it could not be scored (its raw bytes bounded, so that it fits
whatever arrived). Offsets are acknowledged only after the batch's verdicts and dead letters
are delivered, so a crash replays rather than loses; a record that crashes the agent again
and again is dead-lettered as a poison pill by the next start (streams.poison).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Counter_
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import faust
from prometheus_client import Counter, Histogram

from l2loop.infra.clients import PublishMany, batch_sender, started_producer
from l2loop.infra.topics import SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS, SCAN_VERDICTS_SHADOW
from l2loop.logs import get_logger
from l2loop.release.rollout import Rollouts
from l2loop.resilience import Backoff, crash_only, retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import utc_now
from l2loop.schemas.dead_letters import MAX_RAW_BYTES, DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord, dead_letter, decode_record
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.verdicts import Action, StoredVerdict, Verdict
from l2loop.settings import Settings
from l2loop.stats import latency_bucket
from l2loop.stores.rollout import (
    ACTING,
    CANARY_BENIGN,
    CANARY_FP,
    CANARY_MALICIOUS,
    CANARY_TP,
    CANDIDATE,
    DOWN,
    EVENTS,
    FAILED,
    FLAGGED,
    INCUMBENT,
    UP,
    RolloutStore,
    arm_field,
    flip_field,
    latency_field,
    tenant_field,
)
from l2loop.stores.shared import model_registry
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import SeenEvent, VerdictStore, connect, event_digest
from l2loop.streams.consumer import BatchConsumer, Previous, StartedWithWorker, consumer_group
from l2loop.streams.hot_reload import ModelHolder
from l2loop.streams.poison import PoisonGuard
from l2loop.streams.rollout_router import Plan, RolloutRouter
from l2loop.streams.sharing import SCORING
from l2model.record import text_key
from l2model.registry import ModelPointer
from l2model.runtime import L2Model, ModelScore

log = get_logger(__name__)

EVENTS_SCORED = Counter("l2loop_events_scored_total", "scan events that got a verdict")
VERDICTS = Counter("l2loop_verdicts_total", "verdicts delivered, by action", ["action"])
GROUND_TRUTH_IGNORED = Counter(
    "l2loop_ground_truth_ignored_total",
    "scan events whose ground_truth was dropped: only the canary tenant may send it",
)
DEAD_LETTERS = Counter(
    "l2loop_dead_letters_total", "scan events dead-lettered, by reason", ["reason"]
)
SHADOW_VERDICTS = Counter(
    "l2loop_shadow_verdicts_total", "a rollout candidate's shadow verdicts, never acted on"
)
MODEL_SECONDS_PER_PROMPT = Histogram(
    "l2loop_model_seconds_per_prompt",
    "model time per prompt (a batch's inference wall time over its size)",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5),
)


@dataclass(frozen=True, slots=True)
class RolloutBatch:
    """A batch's contribution to its rollout stage's counters (l2loop.stores.rollout)."""

    run_id: str
    stage_index: int
    counts: dict[str, int]


@dataclass
class ScoredBatch:
    verdicts: list[Verdict] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    flagged: list[StoredVerdict] = field(default_factory=list)
    # Events the model allowed, for the seen-event index (false-negative claims).
    seen: list[SeenEvent] = field(default_factory=list)
    # A shadow stage's candidate verdicts: recorded on their own topic, never acted on.
    shadow: list[Verdict] = field(default_factory=list)
    rollout: RolloutBatch | None = None


@dataclass
class Group:
    """The events of a batch one model scores (by their index in the batch), and how it went:
    a score per text, None where the model failed on it."""

    arm: str
    model: L2Model
    indices: list[int]
    texts: list[str]
    scores: list[ModelScore | None] = field(default_factory=list)
    failed: int = 0
    # What the model raised on each text it failed on, by the text's position in the group.
    errors: dict[int, Exception] = field(default_factory=dict)
    latency_ms: float = 0.0

    def flags(self) -> list[bool | None]:
        threshold = self.model.threshold
        return [None if score is None else score.score >= threshold for score in self.scores]


def rollout_counts(
    events: Sequence[ScanEvent],
    acting: Sequence[Group],
    shadow: Group | None,
    *,
    canary_tenant_id: str,
) -> dict[str, int]:
    """What a batch adds to its stage's counters: per arm (acting or shadow) its events,
    flags, canary results, failures and model time; per tenant the acting flag rate of each
    arm; in shadow, each tenant's decision flips against the acting verdict."""
    counts: Counter_[str] = Counter_()
    acting_flag: dict[int, bool | None] = {}
    for group in (*acting, *([shadow] if shadow else [])):
        if not group.indices:
            continue
        arm = group.arm
        is_acting = group is not shadow
        flags = group.flags()
        counts[arm_field(arm, EVENTS)] += len(group.indices)
        counts[arm_field(arm, FAILED)] += group.failed
        counts[latency_field(arm, latency_bucket(group.latency_ms / len(group.texts)))] += len(
            group.indices
        )
        for index, flagged in zip(group.indices, flags, strict=True):
            if flagged is None:
                continue
            event = events[index]
            counts[arm_field(arm, FLAGGED)] += flagged
            truth = event.ground_truth
            if event.tenant_id == canary_tenant_id and truth is not None:
                if truth.label == 0:
                    counts[arm_field(arm, CANARY_BENIGN)] += 1
                    counts[arm_field(arm, CANARY_FP)] += flagged
                else:
                    counts[arm_field(arm, CANARY_MALICIOUS)] += 1
                    counts[arm_field(arm, CANARY_TP)] += flagged
            if is_acting:
                acting_flag[index] = flagged
                # Users' events only: the share a candidate decided is the users' exposure.
                counts[arm_field(arm, ACTING)] += event.tenant_id != canary_tenant_id
                counts[tenant_field(arm, EVENTS, event.tenant_id)] += 1
                counts[tenant_field(arm, FLAGGED, event.tenant_id)] += flagged
    if shadow is not None:
        for index, flagged in zip(shadow.indices, shadow.flags(), strict=True):
            before = acting_flag.get(index)
            if flagged is None or before is None or flagged == before:
                continue
            counts[flip_field(UP if flagged else DOWN, events[index].tenant_id)] += 1
    return {name: value for name, value in counts.items() if value}


def decode_scan_event(
    record: RawRecord, *, raw_max_bytes: int = MAX_RAW_BYTES
) -> ScanEvent | DeadLetter:
    return decode_record(record, ScanEvent, raw_max_bytes=raw_max_bytes)


def action_for(score: float, threshold: float, block_score: float) -> Action:
    if score < threshold:
        return "allow"
    return "block" if score >= max(threshold, block_score) else "warn"


class ModelSource(Protocol):
    """Where the scorer gets the model for each batch (a ModelHolder follows the registry)."""

    @property
    def current(self) -> L2Model: ...


class SuppressionLookup(Protocol):
    """Which (tenant, text_key) pairs of a batch are suppressed (l2loop.stores.suppressions)."""

    async def suppressed_among(
        self, candidates: Iterable[tuple[str, str]]
    ) -> set[tuple[str, str]]: ...


class Scorer:
    """Decodes a batch, scores the valid events in one model call, builds the verdicts."""

    def __init__(
        self,
        models: ModelSource,
        executor: Executor,
        *,
        model_max_chars: int,
        block_score: float,
        canary_tenant_id: str,
        suppressions: SuppressionLookup | None = None,
        router: RolloutRouter | None = None,
        keep_seen: bool = False,
        raw_max_bytes: int = MAX_RAW_BYTES,
    ) -> None:
        self._models = models
        self._raw_max = raw_max_bytes
        self._executor = executor
        self._max_chars = model_max_chars
        self._block_score = block_score
        self._canary_tenant = canary_tenant_id
        self._suppressions = suppressions
        self._router = router
        self._keep_seen = keep_seen

    async def _suppressed(
        self, events: list[tuple[RawRecord, ScanEvent]], keys: list[str]
    ) -> set[tuple[str, str]]:
        if self._suppressions is None:
            return set()
        pairs = [(event.tenant_id, key) for (_, event), key in zip(events, keys, strict=True)]
        return await self._suppressions.suppressed_among(pairs)

    async def _run_model(self, model: L2Model, texts: list[str]) -> list[ModelScore]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, model.score_batch, texts)

    async def _score_isolating_failures(self, model: L2Model, group: Group) -> None:
        """Scores ``group`` in one call; when the call fails, one text at a time, so that a
        text the model cannot take costs only its own verdict (``group.failed``)."""
        started = time.perf_counter()
        try:
            group.scores = list(await self._run_model(model, group.texts))
        except Exception:
            log.exception("batch_scoring_failed", size=len(group.texts), fallback="one_by_one")
            group.scores = []
            for text in group.texts:
                try:
                    (score,) = await self._run_model(model, [text])
                    group.scores.append(score)
                except Exception as exc:
                    group.errors[len(group.scores)] = exc
                    group.scores.append(None)
                    group.failed += 1
        group.latency_ms = (time.perf_counter() - started) * 1000.0

    async def score(self, records: Sequence[RawRecord]) -> ScoredBatch:
        batch = ScoredBatch()
        events: list[tuple[RawRecord, ScanEvent]] = []
        for record in records:
            decoded = decode_scan_event(record, raw_max_bytes=self._raw_max)
            if isinstance(decoded, DeadLetter):
                batch.dead_letters.append(decoded)
            else:
                events.append((record, decoded))
        if not events:
            return batch
        # Read once: a model promoted, or a stage applied, meanwhile takes over from the next
        # batch on.
        incumbent = self._models.current
        plan = None if self._router is None else self._router.plan
        texts = [event.text[: self._max_chars] for _, event in events]
        keys = [text_key(text) for text in texts]
        # One Redis round trip for the whole batch, while the models run.
        lookup = asyncio.create_task(self._suppressed(events, keys))
        acting = self._acting_groups(events, texts, incumbent, plan)
        shadow = (
            Group(CANDIDATE, plan.candidate, list(range(len(events))), texts)
            if plan is not None and plan.shadow
            else None
        )
        for group in (*acting, *([shadow] if shadow else [])):
            if group.indices:
                await self._score_isolating_failures(group.model, group)
        suppressed = await lookup
        scored_at = utc_now()
        ignored_truths = 0
        for group in acting:
            for position, index in enumerate(group.indices):
                record, event = events[index]
                result = group.scores[position]
                if result is None:
                    batch.dead_letters.append(
                        dead_letter(
                            record,
                            DeadLetterReason.SCORING_FAILED,
                            f"the model could not score this text: {group.errors.get(position)!r}",
                            event.event_id,
                            raw_max_bytes=self._raw_max,
                        )
                    )
                    continue
                # Windows count ground truth as canary results: any other producer claiming
                # it would write the loop's own FP rate and recall (decision 0018).
                ignored_truths += (
                    event.ground_truth is not None and event.tenant_id != self._canary_tenant
                )
                relieved = (
                    result.score >= group.model.threshold
                    and (event.tenant_id, keys[index]) in suppressed
                )
                verdict = self._verdict(event, result, group, scored_at, relieved=relieved)
                batch.verdicts.append(verdict)
                if verdict.is_threat:
                    batch.flagged.append(
                        StoredVerdict(verdict=verdict, text=texts[index], l1=event.l1)
                    )
                elif self._keep_seen:
                    batch.seen.append(
                        SeenEvent(
                            event.event_id, event.ts, event_digest(event.tenant_id, keys[index])
                        )
                    )
        if shadow is not None:
            for position, result in enumerate(shadow.scores):
                if result is not None:
                    event = events[position][1]
                    batch.shadow.append(
                        self._verdict(event, result, shadow, scored_at, relieved=False, shadow=True)
                    )
        if plan is not None:
            batch.rollout = RolloutBatch(
                plan.rollout.run_id,
                plan.rollout.stage_index,
                rollout_counts(
                    [event for _, event in events],
                    acting,
                    shadow,
                    canary_tenant_id=self._canary_tenant,
                ),
            )
        if ignored_truths:
            GROUND_TRUTH_IGNORED.inc(ignored_truths)
            log.warning("ground_truth_ignored", events=ignored_truths)
        return batch

    def _acting_groups(
        self,
        events: list[tuple[RawRecord, ScanEvent]],
        texts: list[str],
        incumbent: L2Model,
        plan: Plan | None,
    ) -> list[Group]:
        """The events each model makes the acting verdict of: all the incumbent's without a
        rollout (and in shadow), split by the plan's hash at a percentage stage."""
        if plan is None:
            return [Group(INCUMBENT, incumbent, list(range(len(events))), texts)]
        chosen = [plan.to_candidate(event, self._canary_tenant) for _, event in events]
        return [
            Group(
                arm,
                model,
                [i for i, to_candidate in enumerate(chosen) if to_candidate == wanted],
                [
                    text
                    for text, to_candidate in zip(texts, chosen, strict=True)
                    if to_candidate == wanted
                ],
            )
            for arm, model, wanted in (
                (INCUMBENT, incumbent, False),
                (CANDIDATE, plan.candidate, True),
            )
        ]

    def _verdict(
        self,
        event: ScanEvent,
        result: ModelScore,
        group: Group,
        scored_at: datetime,
        *,
        relieved: bool,
        shadow: bool = False,
    ) -> Verdict:
        threshold = group.model.threshold
        is_threat = result.score >= threshold
        # A confirmed FP of this tenant: allowed, the model's own score kept.
        action: Action = (
            "allow" if relieved else action_for(result.score, threshold, self._block_score)
        )
        return Verdict(
            event_id=event.event_id,
            ts=event.ts,
            tenant_id=event.tenant_id,
            model_version=group.model.version,
            score=result.score,
            threshold=threshold,
            is_threat=is_threat,
            family=result.family if is_threat else "benign",
            severity=result.severity if is_threat else 0.0,
            context=result.context,
            action=action,
            latency_ms=group.latency_ms,
            model_ms=group.latency_ms / max(1, len(group.texts)),
            truncated=len(event.text) > self._max_chars,
            suppressed=relieved,
            ground_truth=event.ground_truth if event.tenant_id == self._canary_tenant else None,
            shadow=shadow,
            scored_at=scored_at,
        )


class VerdictSink:
    """Delivers a scored batch: flagged verdicts to Redis, verdicts and dead letters to Kafka.

    Each step is retried until it succeeds (l2loop.resilience): an outage of either holds
    the batch, and its offsets stay unacknowledged until both steps are done.
    """

    def __init__(
        self,
        publish: PublishMany,
        store: VerdictStore,
        *,
        verdicts_topic: str,
        dlq_topic: str,
        backoff: Backoff,
        shadow_topic: str | None = None,
        rollouts: RolloutStore | None = None,
    ) -> None:
        self._publish = publish
        self._store = store
        self._verdicts_topic = verdicts_topic
        self._dlq_topic = dlq_topic
        self._shadow_topic = shadow_topic
        self._rollouts = rollouts
        self._backoff = backoff

    async def _publish_all(self, batch: ScoredBatch) -> None:
        # Buffer everything first, then wait for all deliveries together: one round of
        # acknowledgements per batch instead of one per record.
        pending = [
            await self._publish(
                self._verdicts_topic,
                [(verdict.event_id.encode(), to_bytes(verdict)) for verdict in batch.verdicts],
            ),
            await self._publish(
                self._dlq_topic, [(letter.key, to_bytes(letter)) for letter in batch.dead_letters]
            ),
        ]
        if batch.shadow and self._shadow_topic is not None:
            pending.append(
                await self._publish(
                    self._shadow_topic,
                    [(verdict.event_id.encode(), to_bytes(verdict)) for verdict in batch.shadow],
                )
            )
        await asyncio.gather(*pending)

    async def deliver(self, batch: ScoredBatch) -> None:
        # Redis first: while it is down no verdict of the batch is published, so a Redis
        # outage holds the batch without publishing anything twice. A broker failure
        # part-way re-sends the whole batch (at-least-once; readers dedupe by event id).
        if batch.flagged or batch.seen:
            await retry_until_done(
                lambda: self._store.put_many(batch.flagged, batch.seen),
                dependency="redis",
                what="store_flagged_verdicts",
                backoff=self._backoff,
            )
        await retry_until_done(
            lambda: self._publish_all(batch),
            dependency="kafka",
            what="publish_verdicts",
            backoff=self._backoff,
        )
        rollout, rollouts = batch.rollout, self._rollouts
        if rollout is not None and rollouts is not None:
            # After the verdicts: a replayed batch may count twice (at-least-once), never a
            # verdict that was not delivered. The analysis is statistical; a rare double
            # count moves it by a batch.
            await retry_until_done(
                lambda: rollouts.add_counts(rollout.run_id, rollout.stage_index, rollout.counts),
                dependency="redis",
                what="rollout_counts",
                backoff=self._backoff,
            )
        EVENTS_SCORED.inc(len(batch.verdicts))
        SHADOW_VERDICTS.inc(len(batch.shadow))
        # By batch: a labelled counter's lookup and lock cost 1.5 µs a verdict.
        for action, count in Counter_(verdict.action for verdict in batch.verdicts).items():
            VERDICTS.labels(action).inc(count)
        for verdict in batch.verdicts:
            MODEL_SECONDS_PER_PROMPT.observe(verdict.model_ms / 1000.0)
        for letter in batch.dead_letters:
            DEAD_LETTERS.labels(letter.reason.value).inc()


def register_score_agent(app: faust.App, settings: Settings) -> None:
    """Declares the score agent on ``app``: scan-events -> scan-verdicts | scan-events.dlq."""
    # One client for the verdict store and the model pointer; it connects on first use,
    # inside the worker's event loop.
    redis_client = connect(settings.redis_dsn)
    store = VerdictStore(
        redis_client,
        key_prefix=settings.topic_prefix,
        ttl_s=settings.stored_verdict_ttl_s,
        seen_ttl_s=settings.seen_event_ttl_s,
    )
    registry = model_registry(settings)
    models = ModelHolder(
        L2Model.load(settings.model_dir, threads=settings.inference_threads),
        ModelPointer(redis_client, key_prefix=settings.topic_prefix),
        threads=settings.inference_threads,
        local_dir=registry.local_dir,
    )
    rollouts = RolloutStore(redis_client, key_prefix=settings.topic_prefix)
    router = RolloutRouter(
        rollouts, threads=settings.inference_threads, local_dir=registry.local_dir
    )
    controller = Rollouts(redis_client, settings, registry)
    # One inference thread: onnxruntime parallelises inside the call and releases the GIL.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2-inference")
    scorer = Scorer(
        models,
        executor,
        model_max_chars=settings.model_max_chars,
        block_score=settings.block_score,
        canary_tenant_id=settings.canary_tenant_id,
        suppressions=SuppressionStore(
            redis_client, key_prefix=settings.topic_prefix, backoff=settings.backoff
        ),
        router=router,
        keep_seen=store.keeps_seen,
        raw_max_bytes=settings.dead_letter_raw_max_bytes,
    )
    guard = PoisonGuard.for_agent(redis_client, settings, "score")
    consumer = BatchConsumer(
        settings,
        [settings.topic(SCAN_EVENTS)],
        group_id=consumer_group(settings, "score"),
        batch_size=settings.batch_size,
        within_s=settings.batch_within_s,
        carry_from=settings.app_id,
        # The worker's other agents yield to scoring (streams.sharing).
        pressure=SCORING,
    )

    @app.timer(interval=settings.model_poll_s)  # type: ignore[untyped-decorator]
    async def follow_model_registry() -> None:
        await models.refresh()
        await router.refresh()

    # Every score worker drives the rollout: any one alive advances or rolls it back, and
    # the compare-and-set on the state makes one decision of theirs.
    @app.timer(interval=settings.rollout_tick_s)  # type: ignore[untyped-decorator]
    async def drive_rollout() -> None:
        await controller.tick()

    @crash_only("score")
    async def score() -> None:
        # A model promoted while this worker was down is the one to score with from the start.
        await models.refresh()
        await router.refresh()
        async with started_producer(settings) as producer:
            sink = VerdictSink(
                batch_sender(producer),
                store,
                verdicts_topic=settings.topic(SCAN_VERDICTS),
                dlq_topic=settings.topic(SCAN_EVENTS_DLQ),
                backoff=settings.backoff,
                shadow_topic=settings.topic(SCAN_VERDICTS_SHADOW),
                rollouts=rollouts,
            )

            async def guarded(records: Sequence[RawRecord], previous: Previous) -> None:
                # Scored while the batch before is delivered; delivered only after it, so
                # that verdicts keep the order of their events (windows count a verdict
                # behind its partition's watermark as late).
                async def score_and_deliver(part: Sequence[RawRecord]) -> None:
                    batch = await scorer.score(part)
                    await previous()
                    await sink.deliver(batch)
                    log.debug(
                        "batch_delivered",
                        records=len(part),
                        verdicts=len(batch.verdicts),
                        dead_letters=len(batch.dead_letters),
                        flagged=len(batch.flagged),
                    )

                async def deliver_pill(letter: DeadLetter) -> None:
                    await previous()
                    await sink.deliver(ScoredBatch(dead_letters=[letter]))

                await guard.run(records, score_and_deliver, deliver_pill)

            def started() -> None:
                log.info(
                    "score_agent_started",
                    model=models.current.manifest.name,
                    version=models.current.version,
                )

            await consumer.run(guarded, started=started)

    app.add_dependency(StartedWithWorker(score))
