"""``l2loop review``: the quarantined reports in review groups, and the decisions on them."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import click
import orjson

from l2loop.cli.clients import T, pass_attached, with_redis
from l2loop.infra.clients import publisher
from l2loop.infra.services import attached_settings
from l2loop.schemas.reports import QuarantinedReport, ReviewAction
from l2loop.settings import Settings
from l2loop.streams.defences.review import Reviewer, ReviewError
from l2loop.streams.reports import ReportServices, report_services

if TYPE_CHECKING:
    from l2loop.streams.defences.review_groups import ReviewGroup

_REPORT_ID = click.argument("report_id", required=False)
_GROUP = click.option(
    "--group", default=None, help="a group id from `review list`: decide every report in it"
)
_REVIEWER = click.option("--reviewer", required=True, help="who decides (kept in the audit log)")
_WHY = click.option("--why", required=True, help="why (kept in the audit log)")
_TENANT = click.option(
    "--tenant", default=None, help="the reporting tenant, when several hold REPORT_ID"
)


def _with_reports(settings: Settings, call: Callable[[ReportServices], Awaitable[T]]) -> T:
    return with_redis(settings, lambda client: call(report_services(settings, client)))


def _member_line(item: QuarantinedReport) -> dict[str, object]:
    return {
        "report_id": item.report.report_id,
        "reason": item.reason,
        "detail": item.detail,
        "tenant_id": item.report.tenant_id,
        "reporter_id": item.report.reporter_id,
        "kind": item.report.kind,
        "model_score": item.verdict.score if item.verdict is not None else None,
        "text": item.text,
    }


def _group_line(group: ReviewGroup, verbose: bool) -> dict[str, object]:
    scores = group.score_range()
    line: dict[str, object] = {
        "group_id": group.group_id,
        "size": group.size,
        "kind": group.kind,
        "reason": group.reason,
        "tenants": group.tenants(),
        "score_min": scores[0] if scores is not None else None,
        "score_max": scores[1] if scores is not None else None,
        "leader": group.leader.report.report_id,
        "leader_tenant": group.leader.report.tenant_id,
        "preview": group.preview(),
    }
    if verbose:
        line["members"] = [_member_line(item) for item in group.members]
    return line


@click.group()
def review() -> None:
    """Quarantined reports in review groups (the same text, or texts a few words apart, under
    one kind of claim and one quarantine reason): list them, release them into training, or
    discard them, a whole group at once or one report."""


@review.command("list")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="each member too: report id, tenant, reporter, score, detail and full text",
)
@pass_attached
def review_list(live: Settings, verbose: bool) -> None:
    """Pending review groups, largest first, one JSON object a line: id, size, kind,
    quarantine reason, reports per tenant, model score range, the leader and a preview of
    its text (every member's text is close to it)."""
    # Review groups bring scikit-learn, which the other command groups never load.
    from l2loop.streams.defences.review_groups import group_reports

    held = _with_reports(live, lambda s: s.queue.pending())
    for group in group_reports(held, similarity=live.review_group_similarity):
        sys.stdout.buffer.write(orjson.dumps(_group_line(group, verbose)) + b"\n")


@review.command("log")
@pass_attached
def review_log(live: Settings) -> None:
    """Every review decision so far (who, when, why, with which group), oldest first, as JSON
    lines."""
    for decision in _with_reports(live, lambda s: s.queue.decisions()):
        sys.stdout.buffer.write(orjson.dumps(decision.model_dump(mode="json")) + b"\n")


def _decide(
    settings: Settings,
    report_id: str | None,
    group: str | None,
    tenant: str | None,
    action: ReviewAction,
    reviewer: str,
    why: str,
) -> list[str]:
    """Decides one report, or every member of a group (each decision audited on its own,
    naming the group); a line for each."""
    # Review groups bring scikit-learn, which the other command groups never load.
    from l2loop.streams.defences.review_groups import find_group, group_reports

    if (report_id is None) == (group is None):
        raise click.UsageError("name a REPORT_ID or a --group, one of them")
    if group is not None and tenant is not None:
        raise click.UsageError("--tenant goes with a REPORT_ID; a group names its members")
    # Attached only now: a usage error is reported as such even with no services around.
    live = attached_settings(settings)

    async def decide(services: ReportServices) -> list[str]:
        if report_id is not None:
            members = [await services.queue.find(report_id, tenant)]
        else:
            groups = group_reports(
                await services.queue.pending(), similarity=live.review_group_similarity
            )
            found = find_group(groups, str(group))
            if found is None:
                raise ReviewError(
                    f"no pending group {group!r}: its reports were decided, or it gained or "
                    "lost one since it was listed; list again"
                )
            members = list(found.members)
        async with publisher(live) as publish:
            reviewer_ = Reviewer.of(services, publish, live)
            decisions = [
                await reviewer_.decide(item, action, reviewer, why, group_id=group)
                for item in members
            ]
        return [
            f"released {d.report_id} of {d.tenant_id}: example {d.example_id} curated"
            if d.action == "release"
            else f"discarded {d.report_id} of {d.tenant_id}"
            for d in decisions
        ]

    try:
        return _with_reports(live, decide)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc


@review.command("release")
@_REPORT_ID
@_GROUP
@_TENANT
@_REVIEWER
@_WHY
@click.pass_obj
def review_release(
    settings: Settings,
    report_id: str | None,
    group: str | None,
    tenant: str | None,
    reviewer: str,
    why: str,
) -> None:
    """Release REPORT_ID, or every report of a --group, into curated-examples, marked
    released-in-review."""
    for line in _decide(settings, report_id, group, tenant, "release", reviewer, why):
        click.echo(line)


@review.command("discard")
@_REPORT_ID
@_GROUP
@_TENANT
@_REVIEWER
@_WHY
@click.pass_obj
def review_discard(
    settings: Settings,
    report_id: str | None,
    group: str | None,
    tenant: str | None,
    reviewer: str,
    why: str,
) -> None:
    """Discard REPORT_ID, or every report of a --group: it teaches nothing."""
    for line in _decide(settings, report_id, group, tenant, "discard", reviewer, why):
        click.echo(line)
