"""The report agent: label-reports in; curated-examples, report-quarantine or rejected out.

Every report ends in exactly one place, recorded in the ledger with its reason:

- ``curated``: a CuratedExample on curated-examples. Its weight and confidence grow with the
  distinct reporters and tenants behind the same text; each new report re-emits the example
  (same ``example_id``) so that consumers see the latest support.
- ``quarantined``: a QuarantinedReport on report-quarantine and in the review queue
  (``l2loop.streams.defences.review``), for a false-positive claim on a confident or
  L1-critical detection, or a claim contradicting an example already curated with the other
  label. Only ``l2loop review`` lets it out.
- ``rejected``: admission refused an HTTP report (``l2loop.streams.defences.admission``; the client
  was told), or it names a text of the golden set.
- ``dead_lettered``: a DeadLetter on label-reports.dlq: the bytes were not a LabelReport, or
  a Kafka report failed a check (reason ``report_refused``, the check's code in ``error``).

Outputs are delivered, then the outcomes recorded, then offsets committed; a crash replays
the batch, and admission and the ledger recognise what they already saw. A record that
crashes the agent again and again is dead-lettered as a ``poison_pill`` by the next start
(streams.poison), its outcome kept under where it sat on the topic.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import faust
import redis.asyncio as aioredis
from faust.streams import Stream

from l2loop.infra.clients import Publish
from l2loop.infra.topics import (
    CURATED_EXAMPLES,
    LABEL_REPORTS,
    LABEL_REPORTS_DLQ,
    REPORT_QUARANTINE,
)
from l2loop.logs import get_logger
from l2loop.resilience import Backoff, crash_only, retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import utc_now
from l2loop.schemas.dead_letters import MAX_RAW_BYTES, DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord, dead_letter, decode_record, raw_records
from l2loop.schemas.reports import (
    CuratedExample,
    LabelReport,
    QuarantinedReport,
    QuarantineReason,
    ReportOutcome,
    ReportRoute,
)
from l2loop.schemas.verdicts import StoredVerdict
from l2loop.settings import Settings
from l2loop.stores.tenants import TenantKeys
from l2loop.stores.verdicts import VerdictStore, connect
from l2loop.streams.defences.admission import (
    Admitted,
    Quotas,
    ReportAdmission,
    ReportLedger,
)
from l2loop.streams.defences.review import ReviewQueue
from l2loop.streams.defences.rules import (
    Rejection,
    RejectReason,
    Strength,
    curated_example,
    example_strength,
    example_text,
    quarantine_reason,
    quarantined_report,
)
from l2loop.streams.defences.support import ExampleSupport
from l2loop.streams.poison import PoisonGuard
from l2model.golden import golden_text_keys
from l2model.record import text_key

log = get_logger(__name__)


def decode_label_report(
    record: RawRecord, *, raw_max_bytes: int = MAX_RAW_BYTES
) -> LabelReport | DeadLetter:
    return decode_record(record, LabelReport, raw_max_bytes=raw_max_bytes)


@dataclass
class RoutedBatch:
    curated: list[CuratedExample] = field(default_factory=list)
    quarantined: list[QuarantinedReport] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes: list[ReportOutcome] = field(default_factory=list)


def _rejected(report: LabelReport, rejection: Rejection) -> ReportOutcome:
    return ReportOutcome(
        report_id=report.report_id,
        tenant_id=report.tenant_id,
        route=ReportRoute.REJECTED,
        reason=rejection.reason.value,
        detail=rejection.detail,
    )


def _dead_lettered(outcome: ReportOutcome) -> ReportOutcome:
    return outcome.model_copy(update={"route": ReportRoute.DEAD_LETTERED})


def dead_letter_id(letter: DeadLetter) -> str:
    """The ledger id of a record that never became a report: where it sat on the topic."""
    return f"dlq:{letter.source_topic}:{letter.partition}:{letter.offset}"


def dead_lettered(letter: DeadLetter) -> ReportOutcome:
    """The outcome of a record that never became a report, kept under where it sat."""
    return ReportOutcome(
        report_id=dead_letter_id(letter),
        route=ReportRoute.DEAD_LETTERED,
        reason=letter.reason.value,
        detail=letter.error,
    )


def record_id(record: RawRecord) -> str:
    """The ledger id of a report whose own id belongs to another report."""
    return f"record:{record.topic}:{record.partition}:{record.offset}"


class ReportRouter:
    """Decides where each report of a batch ends; writes only admission and support state."""

    def __init__(
        self,
        admission: ReportAdmission,
        support: ExampleSupport,
        *,
        golden_keys: frozenset[str],
        high_confidence_score: float,
        quorum: int,
        min_tenants: int,
        clock: Callable[[], datetime] = utc_now,
        raw_max_bytes: int = MAX_RAW_BYTES,
    ) -> None:
        self._raw_max = raw_max_bytes
        self._admission = admission
        self._support = support
        self._golden = golden_keys
        self._high = high_confidence_score
        self._quorum = quorum
        self._min_tenants = min_tenants
        self._clock = clock

    async def route(self, records: Sequence[RawRecord]) -> RoutedBatch:
        batch = RoutedBatch()
        reports: list[LabelReport] = []
        sources: list[RawRecord] = []
        for record in records:
            decoded = decode_label_report(record, raw_max_bytes=self._raw_max)
            if isinstance(decoded, DeadLetter):
                batch.dead_letters.append(decoded)
                batch.outcomes.append(dead_lettered(decoded))
            else:
                reports.append(decoded)
                sources.append(record)
        to_curate: list[tuple[Admitted, str]] = []
        answers = await self._admission.admit(reports, http_admitted_only=True)
        for report, source, answer in zip(reports, sources, answers, strict=True):
            if isinstance(answer, Rejection):
                outcome = _rejected(report, answer)
                if answer.reason is RejectReason.REPORT_ID_TAKEN:
                    # The id's outcome is the first report's; this one is kept (and counted)
                    # under where it sat on the topic.
                    outcome = outcome.model_copy(update={"report_id": record_id(source)})
                self._refuse(batch, report, source, answer, outcome)
                continue
            stored = answer.stored
            example_id = text_key(example_text(report, stored))
            if example_id in self._golden:
                golden = Rejection(RejectReason.GOLDEN_SET, "the golden set is never trained on")
                self._refuse(batch, report, source, golden, _rejected(report, golden))
                continue
            held = quarantine_reason(
                report, stored, self._high, verified_claim=answer.verified_claim
            )
            if held is not None:
                self._quarantine(batch, report, stored, *held)
                continue
            to_curate.append((answer, example_id))
        claims = await self._support.claim([(a.report, eid) for a, eid in to_curate])
        now = self._clock()
        for (admitted, _), claim in zip(to_curate, claims, strict=True):
            report, stored = admitted.report, admitted.stored
            if not claim.agreed:
                self._quarantine(
                    batch,
                    report,
                    stored,
                    "conflicting_reports",
                    f"{claim.support.reporters} reporter(s) had this text curated with the "
                    "other label",
                )
                continue
            strength = example_strength(
                claim.support.principals, claim.support.tenants, self._quorum, self._min_tenants
            )
            example = curated_example(report, stored, claim.support, strength, now=now)
            batch.curated.append(example)
            batch.outcomes.append(_curated(report, example, strength))
        return batch

    def _refuse(
        self,
        batch: RoutedBatch,
        report: LabelReport,
        source: RawRecord,
        rejection: Rejection,
        outcome: ReportOutcome,
    ) -> None:
        """A report that failed a check. Over HTTP the client was told (the API ran the same
        checks); a Kafka producer reads refusals where it reads those of scan events: on the
        dead-letter topic, with the check's reason. A record posing as an HTTP report that
        the API never admitted came from Kafka too."""
        if report.channel != "kafka" and rejection.reason is not RejectReason.NOT_ADMITTED:
            batch.outcomes.append(outcome)
            return
        batch.dead_letters.append(
            dead_letter(
                source,
                DeadLetterReason.REPORT_REFUSED,
                f"{rejection.reason.value}: {rejection.detail}",
                report.report_id,
                raw_max_bytes=self._raw_max,
            )
        )
        batch.outcomes.append(_dead_lettered(outcome))

    def _quarantine(
        self,
        batch: RoutedBatch,
        report: LabelReport,
        stored: StoredVerdict | None,
        reason: QuarantineReason,
        detail: str,
    ) -> None:
        held = quarantined_report(report, stored, reason, detail)
        batch.quarantined.append(held)
        batch.outcomes.append(
            ReportOutcome(
                report_id=report.report_id,
                tenant_id=report.tenant_id,
                route=ReportRoute.QUARANTINED,
                reason=reason,
                detail=detail,
                example_id=held.example_id,
            )
        )


def _curated(report: LabelReport, example: CuratedExample, strength: Strength) -> ReportOutcome:
    return ReportOutcome(
        report_id=report.report_id,
        tenant_id=report.tenant_id,
        route=ReportRoute.CURATED,
        reason="confirmed" if strength.confirmed else "below_quorum",
        detail=f"weight {strength.weight}, confidence {strength.confidence}, "
        f"{example.reporter_count} reporter(s) in {example.tenant_count} tenant(s)",
        example_id=example.example_id,
    )


class ReportSink:
    """Delivers a routed batch: records to Kafka first, then the review queue and ledger."""

    def __init__(
        self,
        publish: Publish,
        queue: ReviewQueue,
        ledger: ReportLedger,
        *,
        settings: Settings,
    ) -> None:
        self._publish = publish
        self._queue = queue
        self._ledger = ledger
        self._backoff: Backoff = settings.backoff
        self._curated = settings.topic(CURATED_EXAMPLES)
        self._quarantine = settings.topic(REPORT_QUARANTINE)
        self._dlq = settings.topic(LABEL_REPORTS_DLQ)

    async def _publish_all(self, batch: RoutedBatch) -> None:
        pending = [
            await self._publish(self._curated, ex.example_id.encode(), to_bytes(ex))
            for ex in batch.curated
        ]
        pending += [
            await self._publish(self._quarantine, q.report.report_id.encode(), to_bytes(q))
            for q in batch.quarantined
        ]
        pending += [
            await self._publish(self._dlq, letter.key, to_bytes(letter))
            for letter in batch.dead_letters
        ]
        await asyncio.gather(*pending)

    async def deliver(self, batch: RoutedBatch) -> None:
        if batch.curated or batch.quarantined or batch.dead_letters:
            await retry_until_done(
                lambda: self._publish_all(batch),
                dependency="kafka",
                what="deliver_reports",
                backoff=self._backoff,
            )
        await retry_until_done(
            lambda: self._queue.hold(batch.quarantined),
            dependency="redis",
            what="hold_quarantined",
            backoff=self._backoff,
        )
        await retry_until_done(
            lambda: self._ledger.record(batch.outcomes),
            dependency="redis",
            what="record_outcomes",
            backoff=self._backoff,
        )


@dataclass(frozen=True)
class ReportServices:
    """The Redis-backed parts of the report path, built once per process."""

    client: aioredis.Redis
    admission: ReportAdmission
    ledger: ReportLedger
    support: ExampleSupport
    queue: ReviewQueue
    tenants: TenantKeys

    async def close(self) -> None:
        await self.client.aclose()


def report_services(settings: Settings, client: aioredis.Redis | None = None) -> ReportServices:
    client = client or connect(settings.redis_dsn)
    prefix = settings.topic_prefix
    tenants = TenantKeys(client, key_prefix=prefix)
    verdicts = VerdictStore(
        client,
        key_prefix=prefix,
        ttl_s=settings.verdict_ttl_s,
        seen_ttl_s=settings.seen_event_ttl_s,
    )
    admission = ReportAdmission(
        client,
        verdicts,
        tenants,
        key_prefix=prefix,
        quotas=Quotas(
            window_s=settings.report_quota_window_s,
            per_reporter=settings.report_quota_per_reporter,
            per_tenant=settings.report_quota_per_tenant,
        ),
        keep_s=settings.report_keep_s,
    )
    return ReportServices(
        client=client,
        admission=admission,
        ledger=ReportLedger(client, key_prefix=prefix, keep_s=settings.report_keep_s),
        support=ExampleSupport(client, key_prefix=prefix, keep_s=settings.report_keep_s),
        queue=ReviewQueue(client, key_prefix=prefix),
        tenants=tenants,
    )


def register_report_agent(app: faust.App, settings: Settings) -> None:
    """Declares the report agent: label-reports -> curated-examples | report-quarantine |
    rejected | label-reports.dlq."""
    services = report_services(settings)
    router = ReportRouter(
        services.admission,
        services.support,
        golden_keys=golden_text_keys(settings.golden_version),
        high_confidence_score=settings.report_high_confidence_score,
        quorum=settings.report_quorum,
        min_tenants=settings.report_confirm_min_tenants,
        raw_max_bytes=settings.dead_letter_raw_max_bytes,
    )
    guard = PoisonGuard.for_agent(services.client, settings, "reports")
    source = app.topic(
        settings.topic(LABEL_REPORTS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def publish(topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        return await app.producer.send(topic, key, value, None, None, None)

    @app.agent(source, name="reports")
    @crash_only("reports")
    async def reports(stream: faust.StreamT[bytes]) -> None:
        sink = ReportSink(publish, services.queue, services.ledger, settings=settings)
        log.info("report_agent_started", quorum=settings.report_quorum)

        async def route_and_deliver(records: Sequence[RawRecord]) -> None:
            # Admission and support claims are idempotent, so a retried batch is safe.
            batch = await retry_until_done(
                functools.partial(router.route, records),
                dependency="redis",
                what="route_reports",
                backoff=settings.backoff,
            )
            await sink.deliver(batch)
            log.debug(
                "reports_routed",
                records=len(records),
                curated=len(batch.curated),
                quarantined=len(batch.quarantined),
                dead_letters=len(batch.dead_letters),
            )

        async def deliver_pill(letter: DeadLetter) -> None:
            # Counted in the ledger like any dead-lettered record, so that reports in still
            # reconcile with where they ended.
            await sink.deliver(RoutedBatch(dead_letters=[letter], outcomes=[dead_lettered(letter)]))

        try:
            batches = cast(Stream[bytes], stream).take_events(
                settings.batch_size, settings.batch_within_s
            )
            async for events in batches:
                await guard.run(raw_records(events), route_and_deliver, deliver_pill)
        finally:
            await services.close()
