"""The curated sink: curated-examples -> the curated store (objects by day) and suppressions.

Each batch is decoded (a record that is not a valid CuratedExample is counted with its reason
and logged with its partition and offset; the topic keeps it forever), appended to the store
and fsynced, then the confirmed false positives among it become suppressions; only then are
its offsets acknowledged. A crash anywhere replays the batch, and both writes are idempotent:
the store skips revisions it holds, a suppression is created once (see l2loop.stores.suppressions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import faust
from faust.streams import Stream
from prometheus_client import Counter

from l2loop.infra.topics import CURATED_EXAMPLES
from l2loop.logs import get_logger
from l2loop.resilience import DEFAULT_BACKOFF, Backoff, crash_only, retry_until_done
from l2loop.schemas.dead_letters import DeadLetter
from l2loop.schemas.decoding import RawRecord, decode_record, raw_records
from l2loop.schemas.reports import CuratedExample
from l2loop.schemas.suppressions import Suppression
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.shared import curated_store
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import connect

log = get_logger(__name__)

CURATED_WRITTEN = Counter(
    "l2loop_curated_examples_written_total", "curated example revisions appended to the store"
)
CURATED_DUPLICATES = Counter(
    "l2loop_curated_examples_duplicate_total", "replayed revisions the store already held"
)
CURATED_UNREADABLE = Counter(
    "l2loop_curated_examples_unreadable_total",
    "records on curated-examples that are not a valid CuratedExample",
    ["reason"],
)
SUPPRESSIONS_CREATED = Counter("l2loop_suppressions_created_total", "suppressions created")


def decode_curated_example(record: RawRecord) -> CuratedExample | DeadLetter:
    """One raw record as a CuratedExample, or a DeadLetter saying why it is not one."""
    return decode_record(record, CuratedExample)


@dataclass
class SinkOutcome:
    written: int = 0
    duplicates: int = 0
    unreadable: list[DeadLetter] = field(default_factory=list)
    suppressions: list[Suppression] = field(default_factory=list)


class CuratedSink:
    """Stores one batch of curated-examples records; safe to call again with the same batch."""

    def __init__(
        self,
        store: CuratedStore,
        suppressions: SuppressionStore,
        executor: Executor,
        *,
        quorum: int,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self._store = store
        self._suppressions = suppressions
        self._executor = executor
        self._quorum = quorum
        self._backoff = backoff
        # Appends and redactions of this process take turns on the store's objects.
        self._files = asyncio.Lock()

    async def store_batch(self, records: Sequence[RawRecord]) -> SinkOutcome:
        outcome = SinkOutcome()
        examples: list[CuratedExample] = []
        for record in records:
            decoded = decode_curated_example(record)
            if isinstance(decoded, DeadLetter):
                outcome.unreadable.append(decoded)
                CURATED_UNREADABLE.labels(decoded.reason.value).inc()
                log.warning(
                    "curated_example_unreadable",
                    reason=decoded.reason.value,
                    error=decoded.error,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
            else:
                examples.append(decoded)
        if not examples:
            return outcome
        loop = asyncio.get_running_loop()
        async with self._files:
            # A store that does not answer holds the batch (its offsets uncommitted) until it
            # does; /health shows the outage meanwhile.
            result = await retry_until_done(
                lambda: loop.run_in_executor(self._executor, self._store.append, examples),
                dependency="store",
                what="curated_append",
                backoff=self._backoff,
            )
        outcome.written, outcome.duplicates = len(result.written), result.duplicates
        CURATED_WRITTEN.inc(outcome.written)
        CURATED_DUPLICATES.inc(outcome.duplicates)
        # All of the batch, not only what was new to the files: a crash after the append
        # and before this replays records the store already holds.
        outcome.suppressions = await self._suppressions.create_from(examples, self._quorum)
        SUPPRESSIONS_CREATED.inc(len(outcome.suppressions))
        for item in outcome.suppressions:
            log.info(
                "suppression_created",
                tenant=item.tenant_id,
                text_key=item.text_key,
                reporters=item.reporter_count,
                source=item.source,
            )
        return outcome

    async def redact_older_than(self, ttl_s: int) -> int:
        cutoff = (datetime.now(tz=UTC) - timedelta(seconds=ttl_s)).date()
        loop = asyncio.get_running_loop()
        async with self._files:
            return await loop.run_in_executor(self._executor, self._store.redact_before, cutoff)


def register_curated_sink(app: faust.App, settings: Settings) -> None:
    """Declares the curated sink on ``app``: curated-examples -> store files + suppressions."""
    store = curated_store(settings)
    redis_client = connect(settings.redis_dsn)
    suppressions = SuppressionStore(
        redis_client,
        key_prefix=settings.topic_prefix,
        backoff=settings.backoff,
        previews=settings.text_ttl_s is None,
    )
    # Object writes (and fsyncs, locally) block: one thread keeps them off the loop and in order.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2-curated")
    sink = CuratedSink(
        store,
        suppressions,
        executor,
        quorum=settings.suppression_quorum,
        backoff=settings.backoff,
    )
    source = app.topic(
        settings.topic(CURATED_EXAMPLES),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    if settings.text_ttl_s is not None:
        ttl_s = settings.text_ttl_s

        @app.timer(interval=min(3600.0, ttl_s / 4))  # type: ignore[untyped-decorator]
        @crash_only("curated_redaction")
        async def drop_expired_texts() -> None:
            dropped = await sink.redact_older_than(ttl_s)
            if dropped:
                log.info("curated_texts_dropped", lines=dropped, ttl_s=ttl_s)

    @app.agent(source, name="curated-sink")
    @crash_only("curated-sink")
    async def curated_sink(stream: faust.StreamT[bytes]) -> None:
        log.info("curated_sink_started", store=store.location)
        try:
            batches = cast(Stream[bytes], stream).take_events(
                settings.curated_batch_size, settings.curated_batch_within_s
            )
            async for events in batches:
                records = raw_records(events)
                outcome = await sink.store_batch(records)
                log.debug(
                    "curated_batch_stored",
                    records=len(records),
                    written=outcome.written,
                    duplicates=outcome.duplicates,
                    unreadable=len(outcome.unreadable),
                    suppressions=len(outcome.suppressions),
                )
        finally:
            await redis_client.aclose()
