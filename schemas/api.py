"""The bodies of ``POST /v1/reports``: what a client sends and what the API answers, read
by the API and by its clients (the loop replay posts reports through it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from l2loop.schemas.common import EventTime, Identifier
from l2loop.schemas.reports import ReportKind


class ReportSubmission(BaseModel):
    """One report as a client sends it; the tenant comes from the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report_id: Identifier | None = Field(
        None, description="yours, to retry safely; assigned when absent"
    )
    event_id: Identifier
    tenant_id: Identifier | None = Field(None, description="if given, must be the key's tenant")
    reporter_id: Identifier
    kind: ReportKind
    reported_at: EventTime | None = None
    reason: str = Field("", max_length=128)
    comment: str = Field("", max_length=2000)
    text: str | None = Field(None, max_length=32 * 1024, description="false_negative only")
    event_ts: EventTime | None = Field(None, description="false_negative only")


class ReportResult(BaseModel):
    index: int
    status: int
    report_id: str | None = None
    code: str | None = None
    field: str | None = None
    detail: str | None = None
    retry_after_s: int | None = None


class ReportsAnswer(BaseModel):
    accepted: int
    rejected: int
    results: list[ReportResult]
