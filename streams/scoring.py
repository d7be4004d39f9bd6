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
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
from faust.streams import Stream
from prometheus_client import Counter, Histogram

from l2loop.infra.clients import Publish
from l2loop.infra.topics import SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS
from l2loop.logs import get_logger
from l2loop.resilience import Backoff, crash_only, retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.dead_letters import MAX_RAW_BYTES, DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord, dead_letter, decode_record, raw_records
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.verdicts import Action, StoredVerdict, Verdict
from l2loop.settings import Settings
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import SeenEvent, VerdictStore, connect, event_digest
from l2loop.streams.hot_reload import ModelHolder
from l2loop.streams.poison import PoisonGuard
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
MODEL_SECONDS_PER_PROMPT = Histogram(
    "l2loop_model_seconds_per_prompt",
    "model time per prompt (a batch's inference wall time over its size)",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5),
)


@dataclass
class ScoredBatch:
    verdicts: list[Verdict] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    flagged: list[StoredVerdict] = field(default_factory=list)
    # Events the model allowed, for the seen-event index (false-negative claims).
    seen: list[SeenEvent] = field(default_factory=list)


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
        self._keep_seen = keep_seen

    async def _suppressed(
        self, events: list[tuple[RawRecord, ScanEvent]], texts: list[str]
    ) -> set[tuple[str, str]]:
        if self._suppressions is None:
            return set()
        pairs = [
            (event.tenant_id, text_key(text))
            for (_, event), text in zip(events, texts, strict=True)
        ]
        return await self._suppressions.suppressed_among(pairs)

    async def _run_model(self, model: L2Model, texts: list[str]) -> list[ModelScore]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, model.score_batch, texts)

    async def _score_isolating_failures(
        self,
        model: L2Model,
        events: list[tuple[RawRecord, ScanEvent]],
        texts: list[str],
        batch: ScoredBatch,
    ) -> list[tuple[RawRecord, ScanEvent, ModelScore]]:
        try:
            scores = await self._run_model(model, texts)
            return [(rec, ev, sc) for (rec, ev), sc in zip(events, scores, strict=True)]
        except Exception:
            log.exception("batch_scoring_failed", size=len(texts), fallback="one_by_one")
        # One by one, so that a text the model cannot take costs only its own verdict.
        scored = []
        for (record, event), text in zip(events, texts, strict=True):
            try:
                (score,) = await self._run_model(model, [text])
                scored.append((record, event, score))
            except Exception as exc:
                batch.dead_letters.append(
                    dead_letter(
                        record,
                        DeadLetterReason.SCORING_FAILED,
                        f"the model could not score this text: {exc!r}",
                        event.event_id,
                        raw_max_bytes=self._raw_max,
                    )
                )
        return scored

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
        texts = [event.text[: self._max_chars] for _, event in events]
        # Read once: a model promoted meanwhile takes over from the next batch on.
        model = self._models.current
        # One Redis round trip for the whole batch, while the model runs.
        lookup = asyncio.create_task(self._suppressed(events, texts))
        started = time.perf_counter()
        scored = await self._score_isolating_failures(model, events, texts, batch)
        latency_ms = (time.perf_counter() - started) * 1000.0
        suppressed = await lookup
        model_ms = latency_ms / len(texts)
        threshold = model.threshold
        version = model.version
        ignored_truths = 0
        for _, event, result in scored:
            is_threat = result.score >= threshold
            key = text_key(event.text[: self._max_chars])
            # A confirmed FP of this tenant: allowed, the model's own score kept.
            relieved = is_threat and bool(suppressed) and (event.tenant_id, key) in suppressed
            # Windows count ground truth as canary results: any other producer claiming it
            # would write the loop's own FP rate and recall (decision 0018).
            truth = event.ground_truth if event.tenant_id == self._canary_tenant else None
            ignored_truths += truth is None and event.ground_truth is not None
            action: Action = (
                "allow" if relieved else action_for(result.score, threshold, self._block_score)
            )
            verdict = Verdict(
                event_id=event.event_id,
                ts=event.ts,
                tenant_id=event.tenant_id,
                model_version=version,
                score=result.score,
                threshold=threshold,
                is_threat=is_threat,
                family=result.family if is_threat else "benign",
                severity=result.severity if is_threat else 0.0,
                context=result.context,
                action=action,
                latency_ms=latency_ms,
                model_ms=model_ms,
                truncated=len(event.text) > self._max_chars,
                suppressed=relieved,
                ground_truth=truth,
            )
            batch.verdicts.append(verdict)
            if is_threat:
                batch.flagged.append(
                    StoredVerdict(verdict=verdict, text=event.text[: self._max_chars], l1=event.l1)
                )
            elif self._keep_seen:
                batch.seen.append(
                    SeenEvent(event.event_id, event.ts, event_digest(event.tenant_id, key))
                )
        if ignored_truths:
            GROUND_TRUTH_IGNORED.inc(ignored_truths)
            log.warning("ground_truth_ignored", events=ignored_truths)
        return batch


class VerdictSink:
    """Delivers a scored batch: flagged verdicts to Redis, verdicts and dead letters to Kafka.

    Each step is retried until it succeeds (l2loop.resilience): an outage of either holds
    the batch, and its offsets stay unacknowledged until both steps are done.
    """

    def __init__(
        self,
        publish: Publish,
        store: VerdictStore,
        *,
        verdicts_topic: str,
        dlq_topic: str,
        backoff: Backoff,
    ) -> None:
        self._publish = publish
        self._store = store
        self._verdicts_topic = verdicts_topic
        self._dlq_topic = dlq_topic
        self._backoff = backoff

    async def _publish_all(self, batch: ScoredBatch) -> None:
        # Buffer everything first, then wait for all deliveries together: one round of
        # acknowledgements per batch instead of one per record.
        pending = [
            await self._publish(self._verdicts_topic, verdict.event_id.encode(), to_bytes(verdict))
            for verdict in batch.verdicts
        ]
        pending += [
            await self._publish(self._dlq_topic, letter.key, to_bytes(letter))
            for letter in batch.dead_letters
        ]
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
        EVENTS_SCORED.inc(len(batch.verdicts))
        for verdict in batch.verdicts:
            VERDICTS.labels(verdict.action).inc()
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
    models = ModelHolder(
        L2Model.load(settings.model_dir, threads=settings.inference_threads),
        ModelPointer(redis_client, key_prefix=settings.topic_prefix),
        threads=settings.inference_threads,
    )
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
        keep_seen=store.keeps_seen,
        raw_max_bytes=settings.dead_letter_raw_max_bytes,
    )
    guard = PoisonGuard.for_agent(redis_client, settings, "score")
    source = app.topic(
        settings.topic(SCAN_EVENTS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def publish(topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        return await app.producer.send(topic, key, value, None, None, None)

    @app.timer(interval=settings.model_poll_s)  # type: ignore[untyped-decorator]
    async def follow_model_registry() -> None:
        await models.refresh()

    @app.agent(source, name="score")
    @crash_only("score")
    async def score(stream: faust.StreamT[bytes]) -> None:
        # A model promoted while this worker was down is the one to score with from the start.
        await models.refresh()
        sink = VerdictSink(
            publish,
            store,
            verdicts_topic=settings.topic(SCAN_VERDICTS),
            dlq_topic=settings.topic(SCAN_EVENTS_DLQ),
            backoff=settings.backoff,
        )
        log.info(
            "score_agent_started",
            model=models.current.manifest.name,
            version=models.current.version,
        )

        async def score_and_deliver(records: Sequence[RawRecord]) -> None:
            batch = await scorer.score(records)
            await sink.deliver(batch)
            log.debug(
                "batch_delivered",
                records=len(records),
                verdicts=len(batch.verdicts),
                dead_letters=len(batch.dead_letters),
                flagged=len(batch.flagged),
            )

        async def deliver_pill(letter: DeadLetter) -> None:
            await sink.deliver(ScoredBatch(dead_letters=[letter]))

        # StreamT does not declare take_events; the agent is always handed a Stream.
        batches = cast(Stream[bytes], stream).take_events(
            settings.batch_size, settings.batch_within_s
        )
        async for events in batches:
            await guard.run(raw_records(events), score_and_deliver, deliver_pill)
