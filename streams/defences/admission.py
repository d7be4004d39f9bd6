"""Admission of user reports, the same for both ways in (HTTP and Kafka), and their ledger.

``ReportAdmission.admit`` runs the checks of ``l2loop.streams.defences.rules`` against the verdict
store and the tenants, then claims the duplicate guard and the quotas in one Lua script per
report (atomic, so two workers never both admit the same reporter twice). Admission is
idempotent per report: the script remembers a fingerprint of every admitted report, so the
agent re-admitting a report the API already admitted, or a replay after a crash, passes
without counting against a quota twice; another report reusing the id is refused.

``ReportLedger`` keeps where each report ended (``ReportOutcome``) and the counters that must
reconcile: curated + quarantined + rejected + dead-lettered = reports in, where a request
the API refuses whole, before looking at its reports, is one.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter

from l2loop.schemas.codec import to_bytes
from l2loop.schemas.reports import LabelReport, ReportOutcome, ReportRoute
from l2loop.schemas.verdicts import StoredVerdict
from l2loop.stores.tenants import TenantKeys
from l2loop.stores.verdicts import VerdictStore
from l2loop.streams.defences.rules import (
    Rejection,
    RejectReason,
    check_report,
    claim_verified,
    own_verdict,
    quota_window,
    retry_after,
)

REPORTS_TOTAL = Counter(
    "l2loop_reports_total",
    "reports by where they ended (curated, quarantined, rejected, dead_lettered) and why",
    ["route", "reason"],
)

# KEYS: admitted-marker, duplicate guard, reporter quota, tenant quota
# ARGV: report id, fingerprint, reporter limit, tenant limit, window end (epoch s), keep s,
#       '1' when the report must already have been admitted by the API
_ADMIT: Final = """
local marker = redis.call('GET', KEYS[1])
if marker then
  if marker == ARGV[2] then return 'replay' end
  return 'report_id_taken'
end
if ARGV[7] == '1' then return 'not_admitted' end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 'duplicate' end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[3]) then
  return 'reporter_quota'
end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[4]) then
  return 'tenant_quota'
end
for i = 3, 4 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIREAT', KEYS[i], ARGV[5])
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[6])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[6])
return 'admitted'
"""

# KEYS: outcome hash, counters hash
# ARGV: route, outcome json, counter field, route it may count from ('' = none yet), keep s
# A report's first final outcome stays (a replayed batch neither overwrites nor counts it
# again); only a review moves a report on, out of quarantine.
_RECORD: Final = """
local previous = redis.call('HGET', KEYS[1], 'route')
if previous and previous ~= 'received' and previous ~= ARGV[4] then
  return 0
end
redis.call('HSET', KEYS[1], 'route', ARGV[1], 'outcome', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[3] == '' then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
return 1
"""


@dataclass(frozen=True, slots=True)
class Admitted:
    report: LabelReport
    # The reporter's own tenant's flagged verdict, if the store holds it.
    stored: StoredVerdict | None
    # A false-negative claim whose event, tenant and text the seen-event index confirms.
    verified_claim: bool = False


def report_key(tenant_id: str | None, report_id: str) -> str:
    """Where a report id lives: ids are the tenant's own, so two tenants may use the same
    one without learning of each other. The length makes the pair unambiguous; records
    that never became a report (no tenant) have a namespace of their own."""
    if tenant_id is None:
        return f"-:{report_id}"
    return f"{len(tenant_id)}:{tenant_id}:{report_id}"


def fingerprint(report: LabelReport) -> str:
    """What makes two records the same report. ``reported_at`` is left out: a Kafka record
    without one gets the time it is decoded, which differs on every replay."""
    claim = report.model_dump(mode="json", exclude={"reported_at"})
    return hashlib.sha256(orjson.dumps(claim, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Quotas:
    window_s: int
    per_reporter: int
    per_tenant: int


class ReportAdmission:
    def __init__(
        self,
        client: aioredis.Redis,
        verdicts: VerdictStore,
        tenants: TenantKeys,
        *,
        key_prefix: str,
        quotas: Quotas,
        keep_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._verdicts = verdicts
        self._tenants = tenants
        self._prefix = key_prefix
        self._quotas = quotas
        self._keep_s = keep_s
        self._clock = clock
        self._admit = client.register_script(_ADMIT)

    def _keys(self, report: LabelReport, window: int) -> list[str]:
        p, tenant = self._prefix, report.tenant_id
        return [
            f"{p}report-admitted:{report_key(tenant, report.report_id)}",
            f"{p}report-dedupe:{tenant}:{report.reporter_id}:{report.event_id}",
            # The per-reporter quota binds an operator-issued reporter key; for ids a tenant
            # key states it is the tenant's own courtesy limit on one of its users, and the
            # tenant quota is what binds the key (decision 0018).
            f"{p}report-quota:reporter:{tenant}:{report.reporter_id}:{window}",
            f"{p}report-quota:tenant:{tenant}:{window}",
        ]

    async def _seen(self, reports: Sequence[LabelReport]) -> list[bytes | None]:
        """For each report, in order, the seen-event index's digest of the event its
        false-negative claim names (None for other kinds)."""
        claims = [
            (index, (report.event_id, report.event_ts))
            for index, report in enumerate(reports)
            if report.kind == "false_negative" and report.event_ts is not None
        ]
        digests = await self._verdicts.seen_digests([claim for _, claim in claims])
        found: list[bytes | None] = [None] * len(reports)
        for (index, _), digest in zip(claims, digests, strict=True):
            found[index] = digest
        return found

    async def admit(
        self, reports: Sequence[LabelReport], *, http_admitted_only: bool = False
    ) -> list[Admitted | Rejection]:
        """One answer per report, in order: admitted (with its verdict) or why not.

        ``http_admitted_only`` (the agent): a report whose channel says ``http`` passes only
        if the API admitted it, so a Kafka producer cannot pose as the API to claim an
        authenticated reporter.
        """
        if not reports:
            return []
        found, tenants, seen = await asyncio.gather(
            self._verdicts.get_many([report.event_id for report in reports]),
            self._tenants.get_many([report.tenant_id for report in reports]),
            self._seen(reports),
        )
        stored = [own_verdict(report, found.get(report.event_id)) for report in reports]
        answers: list[Admitted | Rejection | None] = []
        claims: list[int] = []
        now = self._clock()
        window, window_ends = quota_window(now, self._quotas.window_s)
        async with self._client.pipeline(transaction=False) as pipe:
            for index, report in enumerate(reports):
                rejection = check_report(report, stored[index], tenants.get(report.tenant_id))
                answers.append(rejection)
                if rejection is None:
                    claims.append(index)
                    await self._admit(
                        keys=self._keys(report, window),
                        args=[
                            report.report_id,
                            fingerprint(report),
                            self._quotas.per_reporter,
                            self._quotas.per_tenant,
                            window_ends,
                            self._keep_s,
                            "1" if http_admitted_only and report.channel == "http" else "0",
                        ],
                        client=pipe,
                    )
            results = await pipe.execute() if claims else []
        for index, result in zip(claims, results, strict=True):
            report = reports[index]
            code = result.decode() if isinstance(result, bytes) else str(result)
            if code in ("admitted", "replay"):
                verified = claim_verified(report, seen[index])
                answers[index] = Admitted(report, stored[index], verified)
            else:
                answers[index] = _claim_rejection(report, RejectReason(code), now, window_ends)
        return [answer for answer in answers if answer is not None]


def _claim_rejection(
    report: LabelReport, reason: RejectReason, now: float, window_ends: int
) -> Rejection:
    if reason is RejectReason.DUPLICATE:
        return Rejection(
            reason,
            f"reporter {report.reporter_id!r} already reported event {report.event_id!r}",
            "event_id",
        )
    if reason is RejectReason.REPORT_ID_TAKEN:
        return Rejection(reason, f"report id {report.report_id!r} is taken", "report_id")
    if reason is RejectReason.NOT_ADMITTED:
        return Rejection(
            reason, "a report marked as sent over HTTP that the API never admitted", "channel"
        )
    who = "reporter" if reason is RejectReason.REPORTER_QUOTA else "tenant"
    return Rejection(
        reason,
        f"the {who}'s report quota for this window is used up",
        None,
        retry_after(now, window_ends),
    )


def counter_field(route: ReportRoute, reason: str) -> str:
    """The ledger counter a final outcome counts in: ``curated``, ``rejected:<reason>``, ..."""
    if route in (ReportRoute.REJECTED, ReportRoute.DEAD_LETTERED):
        return f"{route.value}:{reason}"
    return route.value


class ReportLedger:
    """Outcomes per report and the counters of where reports ended, in Redis."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, keep_s: int) -> None:
        self._client = client
        self._prefix = key_prefix
        self._counts = f"{key_prefix}report-counts"
        self._keep_s = keep_s
        self._record = client.register_script(_RECORD)

    def _key(self, tenant_id: str | None, report_id: str) -> str:
        return f"{self._prefix}report:{report_key(tenant_id, report_id)}"

    async def record(
        self,
        outcomes: Sequence[ReportOutcome],
        *,
        counter: Callable[[ReportOutcome], str | None] | None = None,
        moving_from: ReportRoute | None = None,
    ) -> None:
        """Stores ``outcomes``; each counts once in its counter (default: by route and
        reason; ``received`` counts nowhere). ``moving_from`` lets a review move a report
        out of quarantine."""
        if not outcomes:
            return
        fields = [(counter or _default_counter)(outcome) or "" for outcome in outcomes]
        async with self._client.pipeline(transaction=False) as pipe:
            for outcome, field in zip(outcomes, fields, strict=True):
                await self._record(
                    keys=[self._key(outcome.tenant_id, outcome.report_id), self._counts],
                    args=[
                        outcome.route.value,
                        to_bytes(outcome),
                        field,
                        moving_from.value if moving_from is not None else "",
                        self._keep_s,
                    ],
                    client=pipe,
                )
            counted = await pipe.execute()
        for outcome, field, fresh in zip(outcomes, fields, counted, strict=True):
            if fresh:
                REPORTS_TOTAL.labels(field.split(":", 1)[0], outcome.reason).inc()

    async def count_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Counts refusals at the API door: they got their answer and have no id. Each
        counts once: a report refused by a check, or a request refused whole (no key, a body
        over the limit, not JSON, an empty or oversized batch), whatever it held."""
        by_reason = collections.Counter(rejection.reason.value for rejection in rejections)
        if not by_reason:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for reason, count in by_reason.items():
                pipe.hincrby(self._counts, f"rejected:{reason}", count)
            await pipe.execute()
        for reason, count in by_reason.items():
            REPORTS_TOTAL.labels("rejected", reason).inc(count)

    async def get(self, tenant_id: str | None, report_id: str) -> ReportOutcome | None:
        """A report's outcome; ``tenant_id`` None for a record that never became a report."""
        raw = await self._client.hget(self._key(tenant_id, report_id), "outcome")
        return None if raw is None else ReportOutcome.model_validate_json(raw)

    async def get_many(
        self, tenant_id: str | None, report_ids: Sequence[str]
    ) -> list[ReportOutcome | None]:
        """The outcomes of one tenant's ``report_ids``, in order, in one round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            for report_id in report_ids:
                pipe.hget(self._key(tenant_id, report_id), "outcome")
            raws = await pipe.execute()
        return [None if raw is None else ReportOutcome.model_validate_json(raw) for raw in raws]

    async def counts(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], await self._client.hgetall(self._counts))
        return {key.decode(): int(value) for key, value in raw.items()}


def _default_counter(outcome: ReportOutcome) -> str | None:
    if outcome.route is ReportRoute.RECEIVED:
        return None
    return counter_field(outcome.route, outcome.reason)
