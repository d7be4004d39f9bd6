"""The score agent: scan-events in, batched ONNX scoring off the event loop, verdicts out.

Every record ends in exactly one place: a Verdict on scan-verdicts, or a DeadLetter on
scan-events.dlq saying why it could not be scored. Offsets are acknowledged only after the
batch's verdicts and dead letters are delivered, so a crash replays rather than loses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
import orjson
from faust.streams import Stream
from pydantic import ValidationError

from l2loop.logs import get_logger
from l2loop.settings import Settings
from l2model.registry import ModelPointer
from l2model.runtime import L2Model, ModelScore
from schemas.codec import to_bytes
from schemas.dead_letters import DeadLetter, DeadLetterReason
from schemas.events import ScanEvent
from schemas.verdicts import Action, StoredVerdict, Verdict
from streams.hot_reload import ModelHolder
from streams.topics import SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS
from streams.verdict_store import VerdictStore, connect

log = get_logger(__name__)

# (topic, key, value) -> awaitable that resolves once the record is buffered and returns the
# delivery future; both aiokafka's and Faust's producers fit behind it.
Publish = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class ScoredBatch:
    verdicts: list[Verdict] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    flagged: list[StoredVerdict] = field(default_factory=list)


_TYPE_ERRORS = ("_type", "model_attributes_type")


def _reason_for(error: ValidationError) -> DeadLetterReason:
    first = error.errors()[0]
    kind, loc = first["type"], first["loc"]
    if kind in ("empty_text", "text_too_large"):
        return DeadLetterReason(kind)
    if loc[:1] == ("schema_version",):
        return DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION
    if kind == "missing":
        return DeadLetterReason.MISSING_FIELD
    if kind == "extra_forbidden":
        return DeadLetterReason.UNKNOWN_FIELD
    if any(kind.endswith(suffix) for suffix in _TYPE_ERRORS):
        return DeadLetterReason.WRONG_TYPE
    return DeadLetterReason.INVALID_VALUE


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
        for item in error.errors(include_url=False)
    )


def dead_letter(
    record: RawRecord, reason: DeadLetterReason, error: str, event_id: str | None = None
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        error=error,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        raw=record.value or b"",
        event_id=event_id,
    )


def decode_scan_event(record: RawRecord) -> ScanEvent | DeadLetter:
    """Turns one raw record into a ScanEvent, or a DeadLetter naming what is wrong with it."""

    def dead(reason: DeadLetterReason, error: str, event_id: str | None = None) -> DeadLetter:
        return dead_letter(record, reason, error, event_id)

    if not record.value:
        return dead(DeadLetterReason.EMPTY_MESSAGE, "the record has no value")
    try:
        record.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead(DeadLetterReason.INVALID_UTF8, f"value is not valid UTF-8: {exc}")
    try:
        payload = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        return dead(DeadLetterReason.INVALID_JSON, f"value is not JSON: {exc}")
    if not isinstance(payload, dict):
        return dead(
            DeadLetterReason.NOT_AN_OBJECT,
            f"a scan event is a JSON object, got {type(payload).__name__}",
        )
    try:
        return ScanEvent.model_validate(payload)
    except ValidationError as exc:
        event_id = payload.get("event_id")
        return dead(
            _reason_for(exc), _describe(exc), event_id if isinstance(event_id, str) else None
        )


def action_for(score: float, threshold: float, block_score: float) -> Action:
    if score < threshold:
        return "allow"
    return "block" if score >= max(threshold, block_score) else "warn"


class ModelSource(Protocol):
    """Where the scorer gets the model for each batch (a ModelHolder follows the registry)."""

    @property
    def current(self) -> L2Model: ...


class Scorer:
    """Decodes a batch, scores the valid events in one model call, builds the verdicts."""

    def __init__(
        self, models: ModelSource, executor: Executor, *, model_max_chars: int, block_score: float
    ) -> None:
        self._models = models
        self._executor = executor
        self._max_chars = model_max_chars
        self._block_score = block_score

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
                    )
                )
        return scored

    async def score(self, records: Sequence[RawRecord]) -> ScoredBatch:
        batch = ScoredBatch()
        events: list[tuple[RawRecord, ScanEvent]] = []
        for record in records:
            decoded = decode_scan_event(record)
            if isinstance(decoded, DeadLetter):
                batch.dead_letters.append(decoded)
            else:
                events.append((record, decoded))
        if not events:
            return batch
        texts = [event.text[: self._max_chars] for _, event in events]
        # Read once: a model promoted meanwhile takes over from the next batch on.
        model = self._models.current
        started = time.perf_counter()
        scored = await self._score_isolating_failures(model, events, texts, batch)
        latency_ms = (time.perf_counter() - started) * 1000.0
        model_ms = latency_ms / len(texts)
        threshold = model.threshold
        version = model.version
        for _, event, result in scored:
            is_threat = result.score >= threshold
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
                action=action_for(result.score, threshold, self._block_score),
                latency_ms=latency_ms,
                model_ms=model_ms,
                truncated=len(event.text) > self._max_chars,
                ground_truth=event.ground_truth,
            )
            batch.verdicts.append(verdict)
            if is_threat:
                batch.flagged.append(
                    StoredVerdict(verdict=verdict, text=event.text[: self._max_chars], l1=event.l1)
                )
        return batch


class VerdictSink:
    """Delivers a scored batch: verdicts and dead letters to Kafka, flagged verdicts to Redis."""

    def __init__(
        self, publish: Publish, store: VerdictStore, *, verdicts_topic: str, dlq_topic: str
    ) -> None:
        self._publish = publish
        self._store = store
        self._verdicts_topic = verdicts_topic
        self._dlq_topic = dlq_topic

    async def deliver(self, batch: ScoredBatch) -> None:
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
        if batch.flagged:
            await self._store.put_many(batch.flagged)
        await asyncio.gather(*pending)


def register_score_agent(app: faust.App, settings: Settings) -> None:
    """Declares the score agent on ``app``: scan-events -> scan-verdicts | scan-events.dlq."""
    # One client for the verdict store and the model pointer; it connects on first use,
    # inside the worker's event loop.
    redis_client = connect(settings.redis_dsn)
    store = VerdictStore(
        redis_client, key_prefix=settings.topic_prefix, ttl_s=settings.verdict_ttl_s
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
    )
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
    async def score(stream: faust.StreamT[bytes]) -> None:
        # A model promoted while this worker was down is the one to score with from the start.
        await models.refresh()
        sink = VerdictSink(
            publish,
            store,
            verdicts_topic=settings.topic(SCAN_VERDICTS),
            dlq_topic=settings.topic(SCAN_EVENTS_DLQ),
        )
        log.info(
            "score_agent_started",
            model=models.current.manifest.name,
            version=models.current.version,
        )
        try:
            # StreamT does not declare take_events; the agent is always handed a Stream.
            batches = cast(Stream[bytes], stream).take_events(
                settings.batch_size, settings.batch_within_s
            )
            async for events in batches:
                records = [
                    RawRecord(
                        event.message.topic,
                        event.message.partition,
                        event.message.offset,
                        event.message.key,
                        event.message.value,
                    )
                    for event in events
                ]
                batch = await scorer.score(records)
                await sink.deliver(batch)
                log.debug(
                    "batch_delivered",
                    records=len(records),
                    verdicts=len(batch.verdicts),
                    dead_letters=len(batch.dead_letters),
                    flagged=len(batch.flagged),
                )
        finally:
            await store.close()
