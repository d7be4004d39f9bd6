"""A bounded, fair sample of recent production traffic, read back from ``scan-events``.

The counterfactual gate (``l2model.gate.counterfactual``, decision 0021) replays this sample
through the model in service and the candidate. What it reads:

- every partition of the topic, from the first record no older than
  ``gate_traffic_lookback_s`` (``offsets_for_times``; the beginning where the broker finds
  none), but no further back than the newest ``gate_traffic_max_read`` records of the topic
  (split evenly over partitions), until the position passes the end offsets captured at the
  start: new traffic arriving meanwhile is never waited for (the fetch that passes an end
  may bring a few newer records along; they are recent traffic too). Records older than the
  lookback are skipped by their own timestamp as well: not every broker answers
  ``offsets_for_times`` exactly (Tansu answers offset 0 whatever the time, and as a
  partition's end offset one past the first record of its last batch, so that the rest of
  that batch comes only with the fetch that passes the end);
- minus malformed records (counted: the score agent dead-letters them), the canary tenant's
  probes (their texts are the golden set, which the gate judges apart) and any golden text;
- at most ``gate_traffic_sample`` events, shared fairly among tenants: each tenant keeps the
  events of lowest priority (a seeded hash of partition and offset, so the sample is the same
  whatever order the partitions are read in), at most ``level`` of them, and ``level`` is
  lowered whenever the tenants together hold more than the sample's size. A large tenant
  thus gets the same share as every other tenant that has as many events, and a small tenant
  all of its events: max-min fairness, and per tenant a uniform sample.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import BaseModel, ConfigDict

from l2loop.infra.clients import topic_reader
from l2loop.infra.topics import SCAN_EVENTS
from l2loop.logs import get_logger
from l2loop.resilience import retry_until_done
from l2loop.schemas.dead_letters import DeadLetter
from l2loop.schemas.decoding import RawRecord, decode_record
from l2loop.schemas.events import MetadataValue, ScanEvent
from l2loop.settings import Settings
from l2model.gate.counterfactual import TrafficEvent
from l2model.golden import is_golden_text

log = get_logger(__name__)

POLL_MS = 500
BATCH_RECORDS = 10_000
LANGUAGE_KEYS = ("lang", "language")
CATEGORY_KEYS = ("category", "source")


class SampleStats(BaseModel):
    """What the reader went through to make the sample."""

    model_config = ConfigDict(frozen=True)

    topic: str
    since: datetime
    partitions: int
    read: int  # records read, of every kind
    too_old: int
    malformed: int
    canary: int
    golden: int
    tenants: int  # distinct tenants among the usable events
    sampled: int
    # False when the read timed out before the end offsets captured at its start.
    complete: bool


class TrafficSample(BaseModel):
    model_config = ConfigDict(frozen=True)

    events: list[TrafficEvent]
    stats: SampleStats


class FairSample:
    """Per tenant the ``level`` events of lowest priority; ``level`` falls as tenants arrive,
    so that together they never hold more than ``size`` (nor less than one event each)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.level = size
        self._held: dict[str, list[tuple[int, int, TrafficEvent]]] = {}
        self._total = 0
        self._added = 0

    def add(self, priority: int, event: TrafficEvent) -> None:
        # A max-heap on priority: the root is the event the tenant would give up first.
        held = self._held.setdefault(event.tenant_id, [])
        self._added += 1
        entry = (-priority, self._added, event)
        if len(held) < self.level:
            heapq.heappush(held, entry)
            self._total += 1
        elif held and priority < -held[0][0]:
            heapq.heapreplace(held, entry)
        while self._total > self.size and self.level > 1:
            self.level -= 1
            for events in self._held.values():
                if len(events) > self.level:
                    heapq.heappop(events)
                    self._total -= 1

    @property
    def tenants(self) -> int:
        return len(self._held)

    def events(self) -> list[TrafficEvent]:
        """By tenant, then priority: the same sample lists the same way."""
        return [
            event
            for tenant in sorted(self._held)
            for _, _, event in sorted(self._held[tenant], key=lambda entry: -entry[0])
        ]


def priority(seed: int, partition: int, offset: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{partition}:{offset}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _named(metadata: Mapping[str, MetadataValue], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def traffic_event(event: ScanEvent, max_chars: int) -> TrafficEvent:
    """The sample's view of a scan event: the text as the model reads it (its first
    ``max_chars`` characters), its language and category when the metadata names them."""
    return TrafficEvent(
        tenant_id=event.tenant_id,
        text=event.text[:max_chars],
        language=_named(event.metadata, LANGUAGE_KEYS),
        category=_named(event.metadata, CATEGORY_KEYS),
        event_id=event.event_id,
    )


class _Counts:
    def __init__(self) -> None:
        self.read = self.too_old = self.malformed = self.canary = self.golden = 0


async def read_traffic_sample(settings: Settings, *, now: datetime | None = None) -> TrafficSample:
    """The sample of recent ``scan-events`` (see the module's docstring). Empty, without a
    connection, when ``gate_traffic_sample`` is 0; empty when the topic does not exist."""
    topic = settings.topic(SCAN_EVENTS)
    since = (now or datetime.now(tz=UTC)) - timedelta(seconds=settings.gate_traffic_lookback_s)
    sample = FairSample(settings.gate_traffic_sample)
    counts = _Counts()
    partitions: list[TopicPartition] = []
    complete = True
    if settings.gate_traffic_sample:
        consumer = topic_reader(settings, from_beginning=True)
        try:
            await consumer.start()
            partitions = await _partitions(consumer, topic)
            complete = await _read(consumer, partitions, since, settings, sample, counts)
        finally:
            await consumer.stop()
    events = sample.events()
    stats = SampleStats(
        topic=topic,
        since=since,
        partitions=len(partitions),
        read=counts.read,
        too_old=counts.too_old,
        malformed=counts.malformed,
        canary=counts.canary,
        golden=counts.golden,
        tenants=sample.tenants,
        sampled=len(events),
        complete=complete,
    )
    log.info("traffic_sample_read", **stats.model_dump(mode="json"))
    if not complete:
        log.warning("traffic_sample_incomplete", topic=topic, read=counts.read)
    return TrafficSample(events=events, stats=stats)


async def sample_recent_traffic(settings: Settings) -> TrafficSample:
    """``read_traffic_sample``, a broker outage waited out (the retraining waits for the
    sample, it never judges a candidate on traffic it could not read)."""
    return await retry_until_done(
        functools.partial(read_traffic_sample, settings),
        dependency="kafka",
        what="traffic_sample",
        backoff=settings.backoff,
    )


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # Asking for the metadata of every topic creates none; naming the topic could make a
    # broker that auto-creates topics (Tansu does) create it.
    if topic not in await consumer.topics():
        log.warning("traffic_topic_missing", topic=topic)
        return []
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def _read(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since: datetime,
    settings: Settings,
    sample: FairSample,
    counts: _Counts,
) -> bool:
    """Reads each partition from its start past its captured end into ``sample``; False
    when the timeout came first."""
    if not partitions:
        return True
    since_ms = int(since.timestamp() * 1000)
    ends = await consumer.end_offsets(partitions)
    firsts = await consumer.beginning_offsets(partitions)
    found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    newest = max(1, settings.gate_traffic_max_read // len(partitions))
    starts = {}
    for tp in partitions:
        at = found.get(tp)
        starts[tp] = max(firsts[tp], ends[tp] - newest, firsts[tp] if at is None else at.offset)
    todo = {tp: ends[tp] for tp in partitions if starts[tp] < ends[tp]}
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, starts[tp])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.gate_traffic_read_timeout_s
    while todo and loop.time() < deadline:
        batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
        for tp, records in batches.items():
            if tp in todo:
                for record in records:
                    _take(tp, record, since_ms, settings, sample, counts)
        for tp, end in list(todo.items()):
            if await consumer.position(tp) >= end:
                del todo[tp]
                consumer.pause(tp)
    return not todo


def _take(
    tp: TopicPartition,
    record: ConsumerRecord,
    since_ms: int,
    settings: Settings,
    sample: FairSample,
    counts: _Counts,
) -> None:
    counts.read += 1
    if record.timestamp is not None and 0 <= record.timestamp < since_ms:
        counts.too_old += 1
        return
    raw = RawRecord(tp.topic, tp.partition, record.offset, record.key, record.value)
    decoded = decode_record(raw, ScanEvent)
    if isinstance(decoded, DeadLetter):
        counts.malformed += 1
        return
    if decoded.tenant_id == settings.canary_tenant_id:
        counts.canary += 1
        return
    if is_golden_text(decoded.text, settings.golden_version):
        counts.golden += 1
        return
    event = traffic_event(decoded, settings.model_max_chars)
    sample.add(priority(settings.gate_traffic_seed, tp.partition, record.offset), event)
