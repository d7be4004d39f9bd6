"""The report agent: label-reports in; curated-examples, report-quarantine or rejected out.

Every report ends in exactly one place, recorded in the ledger with its reason:

- ``curated``: a CuratedExample on curated-examples. Its weight and confidence grow with the
  distinct reporters and tenants behind the same text; each new report re-emits the example
  (same ``example_id``) so that consumers see the latest support.
- ``quarantined``: a QuarantinedReport on report-quarantine and in the review queue, for a
  false-positive claim on a confident or L1-critical detection, or a claim contradicting an
  example already curated with the other label. Only ``l2loop review`` lets it out.
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
from typing import Any, Final, cast

import faust
import redis.asyncio as aioredis
from faust.streams import Stream

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
    ReviewAction,
    ReviewDecision,
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
    report_key,
)
from l2loop.streams.defences.rules import (
    RELEASED,
    Rejection,
    RejectReason,
    Strength,
    Support,
    claimed_label,
    curated_example,
    example_strength,
    example_text,
    principal,
    quarantine_reason,
    quarantined_report,
    stored_of,
)
from l2loop.streams.poison import PoisonGuard
from l2loop.streams.scoring import Publish
from l2model.golden import golden_text_keys
from l2model.record import text_key

log = get_logger(__name__)

# KEYS: reporters, tenants, report ids, principals of the example under this label;
# reporters of the example under the other label.
# ARGV: reporter, tenant, report id, check conflict, keep s, principal.
_SUPPORT: Final = """
if ARGV[4] == '1' and redis.call('SCARD', KEYS[5]) > 0 then
  return {0, redis.call('SCARD', KEYS[5]), 0, {}, 0}
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[6])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {1, redis.call('SCARD', KEYS[1]), redis.call('SCARD', KEYS[2]),
        redis.call('SMEMBERS', KEYS[3]), redis.call('SCARD', KEYS[4])}
"""


def decode_label_report(
    record: RawRecord, *, raw_max_bytes: int = MAX_RAW_BYTES
) -> LabelReport | DeadLetter:
    return decode_record(record, LabelReport, raw_max_bytes=raw_max_bytes)


@dataclass(frozen=True, slots=True)
class Claim:
    """Support the example gained from one report, or the count that contradicts it."""

    agreed: bool
    support: Support


class ExampleSupport:
    """Distinct reporters, tenants and reports behind each curated text and label, in Redis."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, keep_s: int) -> None:
        self._prefix = key_prefix
        self._keep_s = keep_s
        self._script = client.register_script(_SUPPORT)
        self._client = client

    def _keys(self, example_id: str, label: int) -> list[str]:
        base = f"{self._prefix}example:{example_id}"
        return [
            f"{base}:{label}:reporters",
            f"{base}:{label}:tenants",
            f"{base}:{label}:reports",
            f"{base}:{label}:principals",
            f"{base}:{1 - label}:reporters",
        ]

    async def claim(
        self, items: Sequence[tuple[LabelReport, str]], *, check_conflict: bool = True
    ) -> list[Claim]:
        """Adds each (report, example_id) to its example's support, in order, one round trip;
        with ``check_conflict``, a text already curated under the other label gains nothing."""
        if not items:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for report, example_id in items:
                await self._script(
                    keys=self._keys(example_id, claimed_label(report)),
                    args=[
                        f"{report.tenant_id}/{report.reporter_id}",
                        report.tenant_id,
                        report.report_id,
                        "1" if check_conflict else "0",
                        self._keep_s,
                        principal(report),
                    ],
                    client=pipe,
                )
            replies = await pipe.execute()
        claims = []
        for agreed, reporters, tenants, report_ids, principals in replies:
            ids = sorted(
                item.decode() if isinstance(item, bytes) else str(item) for item in report_ids
            )
            support = Support(ids, int(reporters), int(tenants), int(principals))
            claims.append(Claim(bool(agreed), support))
        return claims


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


class ReviewError(Exception):
    """A review decision that cannot be made as asked; the message says why."""


class ReviewQueue:
    """Quarantined reports awaiting a person, and the audit log of every decision on them.

    Pending reports sit in a Redis hash; each decision is appended to a Redis stream (the
    audit trail, in order) and kept per report in a hash, in one transaction that also
    takes the report out of the queue.
    """

    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self._client = client
        self._pending = f"{key_prefix}review-pending"
        self._decisions = f"{key_prefix}review-decisions"
        self._log = f"{key_prefix}review-log"

    async def hold(self, items: Sequence[QuarantinedReport]) -> None:
        if items:
            mapping: dict[str | bytes, bytes] = {
                report_key(item.report.tenant_id, item.report.report_id): to_bytes(item)
                for item in items
            }
            await self._client.hset(self._pending, mapping=mapping)  # type: ignore[arg-type]

    async def pending(self) -> list[QuarantinedReport]:
        raws = await self._client.hvals(self._pending)
        held = [QuarantinedReport.model_validate_json(raw) for raw in raws]
        return sorted(held, key=lambda item: (item.quarantined_at, item.report.report_id))

    async def find(self, report_id: str, tenant_id: str | None = None) -> QuarantinedReport:
        """The held report with this id: report ids are per tenant, so the tenant is needed
        only when several tenants' reports share the id. Read from every pending report (a
        queue people work through), which also finds one held before ids were per tenant."""
        matches = [
            item
            for item in await self.pending()
            if item.report.report_id == report_id
            and (tenant_id is None or item.report.tenant_id == tenant_id)
        ]
        if not matches:
            of = f" of {tenant_id!r}" if tenant_id is not None else ""
            raise ReviewError(f"report {report_id!r}{of} is not in quarantine")
        if len(matches) > 1:
            tenants = ", ".join(sorted(item.report.tenant_id for item in matches))
            raise ReviewError(
                f"report id {report_id!r} is held for several tenants ({tenants}): name one"
            )
        return matches[0]

    async def decide(self, decision: ReviewDecision) -> None:
        field = report_key(decision.tenant_id, decision.report_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xadd(self._log, {"decision": to_bytes(decision)})
            pipe.hset(self._decisions, field, to_bytes(decision))
            # A report held before ids were per tenant sits under its bare id.
            pipe.hdel(self._pending, field, decision.report_id)
            await pipe.execute()

    async def decisions(self) -> list[ReviewDecision]:
        """The audit trail, oldest first."""
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await self._client.xrange(self._log))
        return [ReviewDecision.model_validate_json(fields[b"decision"]) for _, fields in entries]


class Reviewer:
    """``l2loop review``: releases a quarantined report into curated-examples, or discards it."""

    def __init__(
        self,
        queue: ReviewQueue,
        support: ExampleSupport,
        ledger: ReportLedger,
        publish: Publish,
        *,
        curated_topic: str,
    ) -> None:
        self._queue = queue
        self._support = support
        self._ledger = ledger
        self._publish = publish
        self._curated_topic = curated_topic

    @classmethod
    def of(cls, services: ReportServices, publish: Publish, settings: Settings) -> Reviewer:
        return cls(
            services.queue,
            services.support,
            services.ledger,
            publish,
            curated_topic=settings.topic(CURATED_EXAMPLES),
        )

    async def decide(
        self,
        held: QuarantinedReport,
        action: ReviewAction,
        reviewer: str,
        why: str,
        *,
        group_id: str | None = None,
    ) -> ReviewDecision:
        """Releases or discards ``held`` (as found in the queue); ``group_id`` names the
        review group it was decided with."""
        if action == "discard":
            return await self._record(
                held, action, reviewer, why, ReportRoute.REJECTED, None, group_id
            )
        report, stored = held.report, stored_of(held)
        # The reviewer has read the text: a conflict with the other label is theirs to judge.
        (claim,) = await self._support.claim([(report, held.example_id)], check_conflict=False)
        example = curated_example(
            report, stored, claim.support, RELEASED, now=utc_now(), released_by=reviewer
        )
        # Delivered before the decision is recorded: a crash in between leaves the report in
        # quarantine, and releasing it again re-emits the same example_id.
        delivery = await self._publish(
            self._curated_topic, example.example_id.encode(), to_bytes(example)
        )
        await delivery
        return await self._record(
            held, action, reviewer, why, ReportRoute.CURATED, example.example_id, group_id
        )

    async def _record(
        self,
        held: QuarantinedReport,
        action: ReviewAction,
        reviewer: str,
        why: str,
        route: ReportRoute,
        example_id: str | None,
        group_id: str | None,
    ) -> ReviewDecision:
        decision = ReviewDecision(
            report_id=held.report.report_id,
            tenant_id=held.report.tenant_id,
            action=action,
            reviewer=reviewer,
            why=why,
            quarantine_reason=held.reason,
            example_id=held.example_id,
            group_id=group_id,
        )
        await self._queue.decide(decision)
        reason = "released_in_review" if action == "release" else "discarded_in_review"
        by = reviewer if group_id is None else f"{reviewer} (group {group_id})"
        outcome = ReportOutcome(
            report_id=held.report.report_id,
            tenant_id=held.report.tenant_id,
            route=route,
            reason=reason,
            detail=f"{by}: {why}",
            example_id=example_id,
        )
        counter = "released" if action == "release" else "discarded"
        await self._ledger.record(
            [outcome], counter=lambda _: counter, moving_from=ReportRoute.QUARANTINED
        )
        return decision


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
