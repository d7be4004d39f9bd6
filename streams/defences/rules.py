"""The report path's rules as plain functions: checks, quotas, routing, weights.

Nothing here touches Redis or Kafka, so the poisoning defences can be read and tested on
their own; ``admission``, ``support``, ``review`` and ``streams.reports`` apply them to live
state.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from l2loop.schemas.common import MAX_DETAIL_CHARS, clip
from l2loop.schemas.reports import (
    MAX_REPORT_IDS,
    CuratedExample,
    LabelReport,
    QuarantinedReport,
    QuarantineReason,
)
from l2loop.schemas.verdicts import StoredVerdict
from l2loop.stores.tenants import TenantRecord
from l2loop.stores.verdicts import event_digest
from l2model.contract import CONTEXTS, FAMILIES
from l2model.record import BENIGN, text_key

THREAT_FAMILIES = tuple(family for family in FAMILIES if family != BENIGN)

# docs/architecture.md weights (incremental training guide): production-confirmed 5.0, bulk 1.0.
CONFIRMED_WEIGHT = 5.0
SINGLE_REPORT_WEIGHT = 1.0
SINGLE_REPORT_CONFIDENCE = 0.5
# A threat reported without a severity the model could give (a missed attack).
UNKNOWN_SEVERITY = 0.5


class RejectReason(StrEnum):
    """Why a report was refused: one code per cause, each with its HTTP status."""

    INVALID_JSON = "invalid_json"
    INVALID_FIELD = "invalid_field"
    MISSING_KEY = "missing_key"
    BAD_KEY = "bad_key"
    REVOKED_KEY = "revoked_key"
    BATCH_TOO_LARGE = "batch_too_large"
    BODY_TOO_LARGE = "body_too_large"
    UNKNOWN_TENANT = "unknown_tenant"
    TENANT_REVOKED = "tenant_revoked"
    WRONG_REPORTER = "wrong_reporter"
    MISSING_TEXT = "missing_text"
    UNEXPECTED_TEXT = "unexpected_text"
    MISSING_FAMILY = "missing_family"
    UNKNOWN_EVENT = "unknown_event"
    WRONG_TENANT = "wrong_tenant"
    NOT_FLAGGED = "not_flagged"
    ALREADY_FLAGGED = "already_flagged"
    DUPLICATE = "duplicate"
    REPORT_ID_TAKEN = "report_id_taken"
    # Marked as sent over HTTP, but the API never admitted it (agent only).
    NOT_ADMITTED = "not_admitted"
    REPORTER_QUOTA = "reporter_quota"
    TENANT_QUOTA = "tenant_quota"
    GOLDEN_SET = "golden_set"

    @property
    def http_status(self) -> int:
        return _STATUS[self]


_STATUS: dict[RejectReason, int] = {
    RejectReason.INVALID_JSON: 400,
    RejectReason.INVALID_FIELD: 400,
    RejectReason.MISSING_TEXT: 400,
    RejectReason.UNEXPECTED_TEXT: 400,
    RejectReason.MISSING_FAMILY: 400,
    RejectReason.MISSING_KEY: 401,
    RejectReason.BAD_KEY: 401,
    RejectReason.REVOKED_KEY: 401,
    RejectReason.TENANT_REVOKED: 401,
    RejectReason.UNKNOWN_TENANT: 403,
    RejectReason.WRONG_TENANT: 403,
    RejectReason.WRONG_REPORTER: 403,
    RejectReason.UNKNOWN_EVENT: 404,
    RejectReason.NOT_FLAGGED: 409,
    RejectReason.ALREADY_FLAGGED: 409,
    RejectReason.DUPLICATE: 409,
    RejectReason.REPORT_ID_TAKEN: 409,
    RejectReason.BATCH_TOO_LARGE: 413,
    RejectReason.BODY_TOO_LARGE: 413,
    RejectReason.REPORTER_QUOTA: 429,
    RejectReason.TENANT_QUOTA: 429,
    # Decided after acceptance, by the agent: never an HTTP answer, only an outcome.
    RejectReason.GOLDEN_SET: 422,
    RejectReason.NOT_ADMITTED: 422,
}


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str
    field: str | None = None
    retry_after_s: int | None = None


def _threat_family(report: LabelReport, stored: StoredVerdict | None) -> str | None:
    """The family a threat report teaches: the reporter's, else the model's own."""
    if report.reason in THREAT_FAMILIES:
        return report.reason
    if stored is not None and stored.verdict.family in THREAT_FAMILIES:
        return stored.verdict.family
    return None


def own_verdict(report: LabelReport, stored: StoredVerdict | None) -> StoredVerdict | None:
    """The stored verdict a report may use: only one of the reporter's own tenant. Another
    tenant's event is treated exactly as an unknown one, so that no answer tells a tenant
    that it exists."""
    if stored is None or stored.verdict.tenant_id != report.tenant_id:
        return None
    return stored


def principal(report: LabelReport) -> str:
    """The authenticated voice behind a report (decision 0018): an operator-issued reporter
    key is a voice of its own; otherwise the tenant's key is, whatever reporter ids it
    states. Only the API can vouch for a reporter key, so a Kafka record's claim is ignored.
    The tenant id's length keeps the two parts of a reporter principal unambiguous."""
    if report.authenticated_reporter and report.channel == "http":
        return f"reporter:{len(report.tenant_id)}:{report.tenant_id}:{report.reporter_id}"
    return f"tenant:{report.tenant_id}"


def claim_verified(report: LabelReport, seen_digest: bytes | None) -> bool:
    """Whether a false-negative claim names an event the scorer saw, of the reporter's own
    tenant, with the text the claim carries (``seen_digest``: what the seen-event index
    holds for the event, None when it holds nothing)."""
    if report.kind != "false_negative" or report.text is None or seen_digest is None:
        return False
    return secrets.compare_digest(
        seen_digest, event_digest(report.tenant_id, text_key(report.text))
    )


def check_report(
    report: LabelReport, stored: StoredVerdict | None, tenant: TenantRecord | None
) -> Rejection | None:
    """The checks that need the event's verdict and the tenant, but no counters.

    Both ingestion paths run them: the API before it answers, the agent for Kafka records.
    """
    if tenant is None:
        return Rejection(
            RejectReason.UNKNOWN_TENANT, f"no tenant {report.tenant_id!r}", "tenant_id"
        )
    if not tenant.active:
        return Rejection(RejectReason.TENANT_REVOKED, "the tenant's key is revoked", "tenant_id")
    if report.kind == "false_negative":
        if report.text is None or not report.text.strip() or report.event_ts is None:
            field = "event_ts" if report.text and report.text.strip() else "text"
            return Rejection(
                RejectReason.MISSING_TEXT,
                "a false_negative report carries the event's text and event_ts: missed events "
                "are not stored",
                field,
            )
    elif report.text is not None or report.event_ts is not None:
        return Rejection(
            RejectReason.UNEXPECTED_TEXT,
            f"a {report.kind} report names a stored event; only false_negative carries text",
            "text" if report.text is not None else "event_ts",
        )
    stored = own_verdict(report, stored)
    if stored is None and report.kind != "false_negative":
        return Rejection(
            RejectReason.UNKNOWN_EVENT,
            f"event {report.event_id!r} is not in the verdict store (never flagged, or expired)",
            "event_id",
        )
    if stored is not None:
        flagged = stored.verdict.is_threat
        if report.kind in ("false_positive", "confirmed_threat") and not flagged:
            return Rejection(
                RejectReason.NOT_FLAGGED,
                f"the model did not flag event {report.event_id!r}; "
                + (
                    "only flagged events can be reported as false positives"
                    if report.kind == "false_positive"
                    else "report a missed attack as false_negative"
                ),
                "event_id",
            )
        if report.kind == "false_negative" and flagged:
            return Rejection(
                RejectReason.ALREADY_FLAGGED,
                f"the model flagged event {report.event_id!r}; it was not missed",
                "event_id",
            )
    if report.kind != "false_positive" and _threat_family(report, stored) is None:
        return Rejection(
            RejectReason.MISSING_FAMILY,
            f"name the threat family in reason: one of {', '.join(THREAT_FAMILIES)}",
            "reason",
        )
    return None


def quota_window(now_s: float, window_s: int) -> tuple[int, int]:
    """The fixed quota window ``now_s`` falls in, and the epoch second it ends."""
    index = math.floor(now_s / window_s)
    return index, (index + 1) * window_s


def retry_after(now_s: float, window_ends_s: int) -> int:
    """Whole seconds until a full quota window frees up; at least one."""
    return max(1, math.ceil(window_ends_s - now_s))


def claimed_label(report: LabelReport) -> int:
    """The label a report says its text has: benign for a false positive, a threat else."""
    return 0 if report.kind == "false_positive" else 1


def example_text(report: LabelReport, stored: StoredVerdict | None) -> str:
    """The text a report teaches: the stored one when there is one (a reporter cannot swap
    it), else the text a false_negative report carries."""
    if stored is not None:
        return stored.text
    if report.text is None:
        raise ValueError(f"report {report.report_id} has no text and no stored verdict")
    return report.text


def quarantine_reason(
    report: LabelReport,
    stored: StoredVerdict | None,
    high_confidence_score: float,
    *,
    verified_claim: bool = False,
) -> tuple[QuarantineReason, str] | None:
    """Why a report must be seen by a person before it may teach anything.

    A false-positive claim on a confident or L1-critical detection: reporter counts play no
    part, no number of reports turns one into a benign label without review. A
    false-negative claim whose text is not that of an event the scorer saw for the
    reporter's tenant (``verified_claim``, see ``claim_verified``): free text is only a
    person's word until someone checks it.
    """
    if report.kind == "false_negative" and not verified_claim:
        return (
            "unverified_claim",
            f"no event {report.event_id!r} of this tenant with this text was scored within "
            "the seen-event window (unknown, another tenant's, another text, or too old)",
        )
    if report.kind != "false_positive" or stored is None:
        return None
    verdict = stored.verdict
    if verdict.score >= high_confidence_score:
        return (
            "high_confidence_threat",
            f"model {verdict.model_version} scored it {verdict.score:.3f} "
            f"(>= {high_confidence_score}) as {verdict.family}",
        )
    if stored.l1 is not None and stored.l1.highest_severity == "critical":
        rules = ", ".join(hit.rule_id for hit in stored.l1.hits if hit.severity == "critical")
        detail = f"L1 rules of critical severity fired: {rules}"
        return "l1_critical", clip(detail, MAX_DETAIL_CHARS)
    return None


@dataclass(frozen=True, slots=True)
class Strength:
    weight: float
    confidence: float
    confirmed: bool


def example_strength(principals: int, tenants: int, quorum: int, min_tenants: int) -> Strength:
    """Weight and confidence from independent support (decision 0018): distinct
    authenticated principals, never reporter ids one key states.

    One principal gives a bulk-level example (weight 1.0, confidence 0.5). Production-
    confirmed (5.0, 1.0) takes a quorum of principals from at least ``min_tenants`` tenants:
    a single tenant, however many reporter keys it holds, stays one step below. In between
    grows linearly.
    """
    support = max(1, principals)
    if support >= quorum and tenants >= min_tenants:
        return Strength(CONFIRMED_WEIGHT, 1.0, True)
    share = (min(support, quorum - 1) - 1) / (quorum - 1)
    weight = SINGLE_REPORT_WEIGHT + (CONFIRMED_WEIGHT - SINGLE_REPORT_WEIGHT) * share
    confidence = SINGLE_REPORT_CONFIDENCE + (1.0 - SINGLE_REPORT_CONFIDENCE) * share
    return Strength(round(weight, 3), round(confidence, 3), False)


RELEASED = Strength(CONFIRMED_WEIGHT, 1.0, True)
# One authenticated voice: what any single report, or one key's many, is worth.
ONE_VOICE = Strength(SINGLE_REPORT_WEIGHT, SINGLE_REPORT_CONFIDENCE, False)

_SOURCES = {
    "false_positive": "production_false_positive",
    "false_negative": "production_false_negative",
    "confirmed_threat": "production_detection",
}


def _benign_context(context: str) -> str:
    # A benign example cannot be in the "attack" context; the model's guess for a text it
    # wrongly flagged is often exactly that.
    return "conversational" if context == "attack" or context not in CONTEXTS else context


def named_reports(report_ids: list[str], current: str) -> list[str]:
    """The report ids an example names: all of them up to MAX_REPORT_IDS, else the first
    ones (sorted) and ``current``, so that every report is named by the revision it made."""
    ordered = sorted(report_ids)
    if len(ordered) <= MAX_REPORT_IDS:
        return ordered
    others = [report_id for report_id in ordered if report_id != current]
    return sorted([*others[: MAX_REPORT_IDS - 1], current])


@dataclass(frozen=True, slots=True)
class Support:
    """Who backs an example so far (this report included), from the agent's Redis sets."""

    report_ids: list[str]
    reporters: int
    tenants: int
    principals: int


def curated_example(
    report: LabelReport,
    stored: StoredVerdict | None,
    support: Support,
    strength: Strength,
    *,
    now: datetime,
    released_by: str | None = None,
) -> CuratedExample:
    """The training record a report becomes (incremental-additions format) with provenance."""
    text = example_text(report, stored)
    verdict = stored.verdict if stored is not None else None
    if report.kind == "false_positive":
        if verdict is None:
            raise ValueError("a false-positive report is curated only with its verdict")
        family, severity, context = BENIGN, 0.0, _benign_context(verdict.context)
        rule_id = ""
    else:
        threat = _threat_family(report, stored)
        if threat is None:
            raise ValueError(f"report {report.report_id} names no threat family")
        family, context = threat, "attack"
        severity = (
            verdict.severity if verdict is not None and verdict.is_threat else UNKNOWN_SEVERITY
        )
        hits = stored.l1.hits if stored is not None and stored.l1 is not None else []
        rule_id = next((hit.rule_id for hit in hits if hit.family == threat), "")
    model_version = verdict.model_version if verdict is not None else "unscored"
    model_score = verdict.score if verdict is not None else 0.0
    review = f"; released in review by {released_by}" if released_by else ""
    notes = (
        f"{report.kind} reported by {support.reporters} reporter(s) in {support.tenants} "
        f"tenant(s), {support.principals} authenticated principal(s); model {model_version} "
        f"scored {model_score:.3f}{review}"
    )
    return CuratedExample.build(
        text,
        family,
        context,
        severity=severity,
        weight=strength.weight,
        confidence=strength.confidence,
        source=f"{_SOURCES[report.kind]}_{now:%Y_%m_%d}",
        sub_category=report.reason if report.reason not in THREAT_FAMILIES else "",
        rule_id=rule_id,
        notes=notes,
        example_id=text_key(text),
        event_id=report.event_id,
        event_ts=verdict.ts if verdict is not None else report.event_ts,
        tenant_id=report.tenant_id,
        report_kind=report.kind,
        report_ids=named_reports(support.report_ids, report.report_id),
        reporter_count=support.reporters,
        tenant_count=support.tenants,
        principal_count=support.principals,
        model_version=model_version,
        model_score=model_score,
        confirmed=strength.confirmed,
        released_in_review=released_by is not None,
        reviewed_by=released_by,
        curated_at=now,
    )


def quarantined_report(
    report: LabelReport, stored: StoredVerdict | None, reason: QuarantineReason, detail: str
) -> QuarantinedReport:
    text = example_text(report, stored)
    return QuarantinedReport(
        report=report,
        reason=reason,
        detail=detail,
        example_id=text_key(text),
        text=text,
        verdict=stored.verdict if stored is not None else None,
        l1=stored.l1 if stored is not None else None,
    )


def stored_of(held: QuarantinedReport) -> StoredVerdict | None:
    """The verdict join a quarantined report was made with, as the agent saw it."""
    if held.verdict is None:
        return None
    return StoredVerdict(verdict=held.verdict, text=held.text, l1=held.l1)
