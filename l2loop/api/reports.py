"""``POST /v1/reports`` and ``GET /v1/reports/{id}``: user reports in over HTTP.

A report is admitted here with the same checks the agent applies to Kafka records
(``l2loop.streams.defences.admission``), then published to label-reports; the agent decides where
it ends. Answers (README, "Reporting false positives"):

- one report: the status of that report; a batch (a JSON array): 202 when every report was
  accepted, the shared status when all were refused for the same status, 207 otherwise.
  The body always lists one result per report, in order, with its own status.
- 400/401/413 before any report is looked at: the key is missing, unknown, rotated or
  revoked (decided from the headers, before a byte of the body is read), the body is larger
  than ``api_max_body_bytes`` (answered as soon as that is known, without reading on), the
  body is not JSON, or the batch is larger than the setting allows. Such a request counts
  once in the ledger, however many reports it claimed to hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from l2loop.api.context import ApiContext, ApiError, api_context, error_response
from l2loop.infra.topics import LABEL_REPORTS
from l2loop.resilience import retry_until_done
from l2loop.schemas.api import ReportResult, ReportsAnswer, ReportSubmission
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import Identifier, utc_now
from l2loop.schemas.reports import LabelReport, ReportOutcome, ReportRoute
from l2loop.stores.tenants import TenantRecord
from l2loop.streams.defences.admission import Admitted
from l2loop.streams.defences.rules import Rejection, RejectReason
from l2loop.streams.reports import ReportServices, report_services

router = APIRouter(prefix="/v1/reports", tags=["reports"])
_REPORT_ID: TypeAdapter[str] = TypeAdapter(Identifier)


def _body_schema() -> dict[str, Any]:
    # The body is parsed by hand (so that every fault gets its own code), so OpenAPI is told
    # its shape explicitly.
    one = ReportSubmission.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [one, {"type": "array", "items": one}]}}
            },
        }
    }


def _services(request: Request, context: ApiContext) -> ReportServices:
    services: ReportServices | None = getattr(request.app.state, "report_services", None)
    if services is None:
        services = report_services(context.settings, context.redis)
        request.app.state.report_services = services
    return services


def _error(rejection: Rejection) -> JSONResponse:
    error = ApiError(code=rejection.reason.value, detail=rejection.detail, field=rejection.field)
    status = rejection.reason.http_status
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, error, headers=headers)


class Refused(Exception):
    """The whole request is refused before any report is looked at."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a key authenticates: a tenant, and the reporter when it is a reporter key."""

    tenant: TenantRecord
    reporter_id: str | None


async def _authenticate(request: Request, services: ReportServices) -> Caller:
    """Who the key is, from the headers alone: nothing of the body has been read yet."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Refused(
            Rejection(RejectReason.MISSING_KEY, "send Authorization: Bearer <tenant key>")
        )
    entry = await services.tenants.lookup(key.strip())
    if entry is None:
        raise Refused(Rejection(RejectReason.BAD_KEY, "the key is not a tenant key"))
    if entry.state != "active":
        raise Refused(
            Rejection(RejectReason.REVOKED_KEY, f"the key was {entry.state}; use the new one")
        )
    tenant = await services.tenants.get(entry.tenant_id)
    if tenant is None or not tenant.active:
        raise Refused(Rejection(RejectReason.REVOKED_KEY, "the tenant is revoked"))
    return Caller(tenant, entry.reporter_id)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or Refused as soon as it is known to be over ``limit`` bytes: from
    Content-Length before anything is read, else while the stream arrives, so that at most
    ``limit`` bytes (and one chunk) are ever held."""
    too_large = Refused(
        Rejection(
            RejectReason.BODY_TOO_LARGE,
            f"the body is over {limit} bytes; send fewer reports per request",
            "body",
        )
    )
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _field_of(error: ValidationError, root: str = "<root>") -> tuple[str, str]:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or root
    return field, f"{field}: {first['msg']}"


def _to_report(item: Any, caller: Caller) -> LabelReport | Rejection:
    if not isinstance(item, dict):
        return Rejection(RejectReason.INVALID_FIELD, "a report is a JSON object", "<root>")
    try:
        submission = ReportSubmission.model_validate(item)
    except ValidationError as exc:
        field, detail = _field_of(exc)
        return Rejection(RejectReason.INVALID_FIELD, detail, field)
    tenant_id = caller.tenant.tenant_id
    if submission.tenant_id is not None and submission.tenant_id != tenant_id:
        return Rejection(
            RejectReason.WRONG_TENANT, "tenant_id is not the key's tenant", "tenant_id"
        )
    if caller.reporter_id is not None and submission.reporter_id != caller.reporter_id:
        return Rejection(
            RejectReason.WRONG_REPORTER, "reporter_id is not the key's reporter", "reporter_id"
        )
    return LabelReport(
        report_id=submission.report_id or uuid.uuid4().hex,
        event_id=submission.event_id,
        tenant_id=tenant_id,
        reporter_id=submission.reporter_id,
        kind=submission.kind,
        reported_at=submission.reported_at or utc_now(),
        reason=submission.reason,
        comment=submission.comment,
        text=submission.text,
        event_ts=submission.event_ts,
        channel="http",
        authenticated_reporter=caller.reporter_id is not None,
    )


def _result(index: int, answer: LabelReport | Rejection) -> ReportResult:
    if isinstance(answer, LabelReport):
        return ReportResult(index=index, status=202, report_id=answer.report_id)
    return ReportResult(
        index=index,
        status=answer.reason.http_status,
        code=answer.reason.value,
        field=answer.field,
        detail=answer.detail,
        retry_after_s=answer.retry_after_s,
    )


def _overall_status(results: list[ReportResult], batch: bool) -> int:
    statuses = {result.status for result in results}
    if not batch or len(statuses) == 1:
        return results[0].status
    return 207


async def _publish(context: ApiContext, reports: list[LabelReport]) -> None:
    topic = context.settings.topic(LABEL_REPORTS)

    async def send_all() -> None:
        pending = [
            await context.producer.send(topic, to_bytes(report), key=report.event_id.encode())
            for report in reports
        ]
        for delivery in pending:
            await delivery

    await retry_until_done(
        send_all, dependency="kafka", what="publish_reports", backoff=context.settings.backoff
    )


@router.post(
    "",
    status_code=202,
    response_model=ReportsAnswer,
    responses={
        207: {"model": ReportsAnswer, "description": "a batch whose reports fared differently"},
        400: {"model": ApiError},
        401: {"model": ApiError},
        413: {"model": ApiError},
        429: {"model": ReportsAnswer, "description": "quota used up; see Retry-After"},
    },
    openapi_extra=_body_schema(),
)
async def submit_reports(
    request: Request, context: Annotated[ApiContext, Depends(api_context)]
) -> Response:
    """Report false positives, missed attacks or confirmed threats: one object or an array."""
    services = _services(request, context)
    try:
        caller = await _authenticate(request, services)
        body = await _read_body(request, context.settings.api_max_body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Refused(
                Rejection(RejectReason.INVALID_JSON, f"the body is not JSON: {exc}", "body")
            ) from None
        batch = isinstance(payload, list)
        items: list[Any] = payload if isinstance(payload, list) else [payload]
        if not items:
            raise Refused(Rejection(RejectReason.INVALID_FIELD, "the batch is empty", "body"))
        limit = context.settings.report_batch_max
        if len(items) > limit:
            raise Refused(
                Rejection(
                    RejectReason.BATCH_TOO_LARGE,
                    f"{len(items)} reports in one request; at most {limit}",
                    "body",
                )
            )
    except Refused as refused:
        # One request, one count: what a refused body claims to hold was never looked at,
        # and counting its items would let one request move the ledger by millions.
        await services.ledger.count_rejections([refused.rejection])
        return _error(refused.rejection)

    answers: list[LabelReport | Rejection] = [_to_report(item, caller) for item in items]
    candidates = [answer for answer in answers if isinstance(answer, LabelReport)]
    admitted = iter(await services.admission.admit(candidates))
    for index, answer in enumerate(answers):
        if isinstance(answer, LabelReport):
            verdict = next(admitted)
            answers[index] = answer if isinstance(verdict, Admitted) else verdict
    accepted = [answer for answer in answers if isinstance(answer, LabelReport)]
    refused_items = [answer for answer in answers if isinstance(answer, Rejection)]
    if accepted:
        await services.ledger.record(
            [
                ReportOutcome(
                    report_id=report.report_id,
                    tenant_id=report.tenant_id,
                    route=ReportRoute.RECEIVED,
                    reason="accepted",
                    detail="admitted over HTTP; on its way to the report agent",
                )
                for report in accepted
            ]
        )
        await _publish(context, accepted)
    await services.ledger.count_rejections(refused_items)

    results = [_result(index, answer) for index, answer in enumerate(answers)]
    answer_body = ReportsAnswer(
        accepted=len(accepted), rejected=len(refused_items), results=results
    )
    waits = [item.retry_after_s for item in refused_items if item.retry_after_s is not None]
    headers = {"Retry-After": str(max(waits))} if waits else None
    return JSONResponse(
        answer_body.model_dump(exclude_none=True),
        status_code=_overall_status(results, batch),
        headers=headers,
    )


@router.get(
    "/{report_id}",
    response_model=ReportOutcome,
    responses={400: {"model": ApiError}, 401: {"model": ApiError}, 404: {"model": ApiError}},
)
async def report_outcome(
    report_id: str, request: Request, context: Annotated[ApiContext, Depends(api_context)]
) -> Response:
    """Where a report ended (curated, quarantined, rejected) and why, or that it is on its way."""
    services = _services(request, context)
    try:
        caller = await _authenticate(request, services)
        # No report has such an id; refused before it becomes a Redis key.
        _REPORT_ID.validate_python(report_id)
    except Refused as refused:
        return _error(refused.rejection)
    except ValidationError as exc:
        field, detail = _field_of(exc, "report_id")
        return _error(Rejection(RejectReason.INVALID_FIELD, detail, field))
    # Report ids are per tenant: another tenant's report with this id is not even looked at.
    outcome = await services.ledger.get(caller.tenant.tenant_id, report_id)
    if outcome is None:
        error = ApiError(code="unknown_report", detail=f"no report {report_id!r} of this tenant")
        return error_response(404, error)
    return JSONResponse(outcome.model_dump(mode="json"), status_code=200)
