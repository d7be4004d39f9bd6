"""LabelReport, CuratedExample and ReportOutcome: the report path's records."""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from l2loop.schemas.common import (
    SCHEMA_VERSION,
    Detail,
    EventTime,
    Identifier,
    ModelVersion,
    Name,
    Probability,
    utc_now,
)
from l2loop.schemas.events import MAX_TEXT_CHARS, L1Summary
from l2loop.schemas.verdicts import Verdict
from l2model.record import TrainingRecord

# A curated example names at most this many of the reports behind it (the one that made
# this revision always among them); ``reporter_count`` and ``tenant_count`` count them all.
MAX_REPORT_IDS: Final = 100

ReportKind = Literal["false_positive", "false_negative", "confirmed_threat"]
Channel = Literal["http", "kafka"]


class LabelReport(BaseModel):
    """A user's or analyst's claim about one scanned event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    report_id: Identifier
    event_id: Identifier
    tenant_id: Identifier
    reporter_id: Identifier
    kind: ReportKind
    reported_at: EventTime = Field(default_factory=utc_now)
    reason: str = Field("", max_length=128, description="a short category, e.g. 'programming'")
    comment: str = Field("", max_length=2000)
    # A missed attack was not flagged, so the verdict store does not hold it: an FN report
    # carries the text and the event's time itself.
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    event_ts: EventTime | None = None
    channel: Channel = "kafka"
    authenticated_reporter: bool = Field(
        False,
        description="set by the API when an operator-issued reporter key sent the report, so "
        "that reporter_id is authenticated; otherwise the tenant's key vouches for it and the "
        "tenant is one voice (a Kafka record's claim of it is ignored)",
    )


class ReportRoute(StrEnum):
    """Where a report ended: exactly one of these, or still on its way."""

    RECEIVED = "received"
    CURATED = "curated"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"


class ReportOutcome(BaseModel):
    """What ``GET /v1/reports/{id}`` answers, kept in Redis per report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report_id: Identifier
    tenant_id: Identifier | None = Field(
        None, description="the reporting tenant: only it may read this outcome"
    )
    route: ReportRoute
    reason: Name = Field("", description="machine-readable code, e.g. 'not_flagged'")
    detail: Detail = ""
    example_id: str | None = Field(None, max_length=64)
    decided_at: EventTime = Field(default_factory=utc_now)


class CuratedExample(TrainingRecord):
    """A training record (incremental-additions format) with its provenance.

    ``example_id`` is the sha256 of the normalised text (``l2model.record.text_key``);
    ``event_id`` and ``event_ts`` let the window agent attribute the label to the hour of
    the original event.
    """

    # The training record's fields, with the limits of a record on a topic.
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    family: Name
    context: Name
    source: Name = Field(min_length=1)
    sub_category: Name = ""
    rule_id: str = Field("", max_length=256)
    notes: Detail = ""

    schema_version: Literal[1] = SCHEMA_VERSION
    example_id: str = Field(min_length=64, max_length=64)
    event_id: Identifier
    event_ts: EventTime
    tenant_id: Identifier
    report_kind: ReportKind
    report_ids: list[Identifier] = Field(min_length=1, max_length=MAX_REPORT_IDS)
    reporter_count: int = Field(ge=1, description="distinct reporter ids, as their keys state")
    tenant_count: int = Field(1, ge=1)
    principal_count: int = Field(
        1,
        ge=1,
        description="distinct authenticated principals (tenant keys, operator-issued reporter "
        "keys): what weight and confirmation count",
    )
    model_version: ModelVersion
    model_score: Probability
    confirmed: bool = Field(
        False,
        description="production-confirmed: a quorum of authenticated principals from enough "
        "distinct tenants, or released in review",
    )
    released_in_review: bool = False
    reviewed_by: str | None = Field(None, max_length=256)
    curated_at: EventTime = Field(default_factory=utc_now)


QuarantineReason = Literal[
    "high_confidence_threat", "l1_critical", "conflicting_reports", "unverified_claim"
]


class QuarantinedReport(BaseModel):
    """A report held for a person (``l2loop review``): what it claims and why it is held.

    It carries the verdict and text it was joined to, so that a release long after the
    verdict store forgot the event still builds the full training record.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    report: LabelReport
    reason: QuarantineReason
    detail: Detail
    example_id: str = Field(min_length=64, max_length=64)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    verdict: Verdict | None = None
    l1: L1Summary | None = None
    quarantined_at: EventTime = Field(default_factory=utc_now)


ReviewAction = Literal["release", "discard"]


class ReviewDecision(BaseModel):
    """One person's decision on a quarantined report: who, when, why. Kept for audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    report_id: Identifier
    tenant_id: Identifier | None = Field(
        None, description="the reporting tenant (report ids are per tenant)"
    )
    action: ReviewAction
    reviewer: Identifier
    why: str = Field(min_length=1, max_length=2000)
    quarantine_reason: QuarantineReason
    example_id: str = Field(min_length=64, max_length=64)
    group_id: str | None = Field(
        None,
        max_length=64,
        description="the review group decided at once with this report (each member's "
        "decision is kept on its own); none when the report was decided alone",
    )
    decided_at: EventTime = Field(default_factory=utc_now)
