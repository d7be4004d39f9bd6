"""The review queue: quarantined reports held for a person, and ``l2loop review``'s
decisions on them.

The report agent holds what it quarantines here (``ReviewQueue.hold``); a reviewer releases
a held report into curated-examples or discards it (``Reviewer``), each decision kept in an
audit log and recorded in the report ledger. Which reports are decided together is
``review_groups``' to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import redis.asyncio as aioredis

from l2loop.infra.clients import Publish
from l2loop.infra.topics import CURATED_EXAMPLES
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import utc_now
from l2loop.schemas.reports import (
    QuarantinedReport,
    ReportOutcome,
    ReportRoute,
    ReviewAction,
    ReviewDecision,
)
from l2loop.settings import Settings
from l2loop.streams.defences.admission import ReportLedger, report_key
from l2loop.streams.defences.rules import RELEASED, curated_example, stored_of
from l2loop.streams.defences.support import ExampleSupport


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


class ReviewServices(Protocol):
    """What a review uses of the report path's services (``streams.reports.ReportServices``)."""

    @property
    def queue(self) -> ReviewQueue: ...

    @property
    def support(self) -> ExampleSupport: ...

    @property
    def ledger(self) -> ReportLedger: ...


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
    def of(cls, services: ReviewServices, publish: Publish, settings: Settings) -> Reviewer:
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
