"""The replay's simulated reporters: which errors get reported (and which attacks a hostile
user claims are false positives), posted over ``POST /v1/reports``, and where the ledger
and the curated store say they ended."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import orjson

from l2loop.demo.loop_replay import DrawnReports, analyst_family
from l2loop.demo.reporters import post_reports
from l2loop.infra.embedded import ManagedProcess
from l2loop.replay.record import ReplayError, ReportTally
from l2loop.replay.traffic import REPLAY_TENANT, VerdictReader, still_running
from l2loop.resilience import retry_until_done
from l2loop.schemas.api import ReportsAnswer, ReportSubmission
from l2loop.schemas.reports import ReportRoute
from l2loop.schemas.verdicts import Verdict
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.streams.alert_sinks import RECEIVER_ERRORS
from l2loop.streams.defences.admission import ReportLedger
from l2model.evaluation import LabeledPrompt


def draw_hostile(
    labels: np.ndarray,
    verdicts: Sequence[Verdict],
    *,
    bar: float,
    share: float,
    seed: int,
) -> list[int]:
    """``share`` of the attacks the model flagged at or above the high-confidence ``bar``,
    drawn with ``seed``: what a hostile user claims are false positives. Below the bar one
    tenant's claim is curated at bulk weight by design (decision 0018); at or above it, it
    is held for review, the defence the replay shows."""
    confident = [
        index
        for index, verdict in enumerate(verdicts)
        if labels[index] == 1 and verdict.is_threat and verdict.score >= bar
    ]
    rng = random.Random(f"hostile:{seed}")
    return sorted(rng.sample(confident, round(share * len(confident))))


def hostile_report_id(tag: str, index: int) -> str:
    return f"{tag}-hostile-{index}"


def report_submissions(
    prompts: Sequence[LabeledPrompt],
    verdicts: Sequence[Verdict],
    fp: Sequence[int],
    fn: Sequence[int],
    tag: str,
    hostile: Sequence[int] = (),
) -> list[ReportSubmission]:
    """One report per drawn error, each by a reporter of its own (so that no per-reporter
    quota binds): FPs name the stored event, misses carry the text and the family an analyst
    gives them; hostile reports claim the ``hostile`` attacks are false positives, as an
    attacker would, calling them programming."""
    submissions = []
    for index in fp:
        submissions.append(
            ReportSubmission(
                report_id=f"{tag}-fp-{index}",
                event_id=verdicts[index].event_id,
                reporter_id=f"{tag}-user-{index}",
                kind="false_positive",
                reason=(prompts[index].category or prompts[index].family or "")[:128],
            )
        )
    for index in fn:
        submissions.append(
            ReportSubmission(
                report_id=f"{tag}-fn-{index}",
                event_id=verdicts[index].event_id,
                reporter_id=f"{tag}-analyst-{index}",
                kind="false_negative",
                reason=analyst_family(prompts[index]),
                text=prompts[index].text,
                event_ts=verdicts[index].ts,
            )
        )
    for index in hostile:
        submissions.append(
            ReportSubmission(
                report_id=hostile_report_id(tag, index),
                event_id=verdicts[index].event_id,
                reporter_id=hostile_report_id(tag, index),
                kind="false_positive",
                reason="programming",
            )
        )
    return submissions


@dataclass
class Posted:
    """The ids of the reports the API accepted (the agent decides where they end; the API's
    refusals are final and the ledger counts them), and how many were tried again."""

    accepted: list[str]
    quota_retries: int


def next_batch(
    pending: Sequence[ReportSubmission], max_reports: int, max_bytes: int
) -> list[dict[str, object]]:
    """The bodies of the reports that go in the next request, from the head of ``pending``:
    at most ``max_reports``, and no more than fit ``max_bytes`` as a JSON array (the API
    refuses a larger body unread), so that a file of long missed-attack texts is sent in
    smaller batches. A report too large alone still goes alone, for the API to refuse."""
    batch: list[dict[str, object]] = []
    size = len(b"[]")
    for submission in pending[:max_reports]:
        body = submission.model_dump(mode="json", exclude_none=True)
        size += len(orjson.dumps(body)) + (1 if batch else 0)
        if batch and size > max_bytes:
            break
        batch.append(body)
    return batch


async def post_all(
    settings: Settings,
    api: ManagedProcess,
    key: str,
    submissions: Sequence[ReportSubmission],
    echo: Callable[[str], None],
) -> Posted:
    """Posts in batches of ``report_batch_max`` that fit ``api_max_body_bytes``; a report
    refused for quota (429) is posted again after the Retry-After the API gave; the API's
    other refusals are final. An API that does not answer is waited for, unless its process
    has exited."""
    posted = Posted([], 0)
    pending = list(submissions)

    async def post(body: list[dict[str, object]]) -> httpx.Response:
        still_running(api)
        return await post_reports(http, key, body)

    # A batch of hundreds is admitted in one request; a loaded machine may take seconds.
    address = f"http://{settings.api_host}:{api.port}"
    async with httpx.AsyncClient(base_url=address, timeout=30.0) as http:
        while pending:
            body = next_batch(pending, settings.report_batch_max, settings.api_max_body_bytes)
            batch, pending = pending[: len(body)], pending[len(body) :]
            response = await retry_until_done(
                functools.partial(post, body),
                dependency="api",
                what="post_replay_reports",
                backoff=settings.backoff,
                transient=RECEIVER_ERRORS,
            )
            if response.status_code in (400, 401, 413):
                # The whole request was refused before any report was looked at.
                raise ReplayError(f"the report API refused the batch: {response.text}")
            answer = ReportsAnswer.model_validate_json(response.content)
            retry: list[ReportSubmission] = []
            for result in answer.results:
                submission = batch[result.index]
                if result.status == 202:
                    posted.accepted.append(str(submission.report_id))
                elif result.status == 429:
                    retry.append(submission)
            if retry:
                wait_s = int(response.headers.get("retry-after", "1"))
                echo(f"  report quota used up: {len(retry)} reports wait {wait_s}s (Retry-After)")
                posted.quota_retries += len(retry)
                await asyncio.sleep(wait_s)
                pending = retry + pending
    return posted


async def await_outcomes(
    settings: Settings, ledger: ReportLedger, report_ids: Sequence[str], reader: VerdictReader
) -> dict[str, ReportRoute]:
    """Waits until the report agent has decided on every accepted report (the ledger has a
    route other than ``received`` for it); returns each one's route. A Redis outage is
    waited out."""
    decided: dict[str, ReportRoute] = {}
    while len(decided) < len(report_ids):
        waiting = [report_id for report_id in report_ids if report_id not in decided]
        outcomes = await retry_until_done(
            functools.partial(ledger.get_many, REPLAY_TENANT, waiting),
            dependency="redis",
            what="replay_outcomes",
            backoff=settings.backoff,
        )
        for report_id, outcome in zip(waiting, outcomes, strict=True):
            if outcome is not None and outcome.route is not ReportRoute.RECEIVED:
                decided[report_id] = outcome.route
        if len(decided) < len(report_ids):
            await reader.poll()  # notices a dead worker, and paces the loop
    return decided


def tally_reports(
    before: dict[str, int],
    after: dict[str, int],
    quota_retries: int,
    *,
    events: int,
    model_version: str,
    drawn: DrawnReports,
    hostile: int = 0,
) -> ReportTally:
    """The ledger's counters moved by one cycle's reports (the replay's prefix is its own, so
    every move is the replay's)."""
    moved = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return ReportTally(
        events=events,
        model_version=model_version,
        false_positives=drawn.false_positives,
        misses=drawn.misses,
        fp_reported=len(drawn.fp),
        fn_reported=len(drawn.fn),
        hostile_reported=hostile,
        curated=moved.get(ReportRoute.CURATED.value, 0),
        quarantined=moved.get(ReportRoute.QUARANTINED.value, 0),
        rejected={
            name: count
            for name, count in sorted(moved.items())
            if count and name.split(":", 1)[0] in ("rejected", "dead_lettered")
        },
        quota_retries=quota_retries,
    )


async def await_curated(
    store: CuratedStore, report_ids: set[str], since: datetime, reader: VerdictReader
) -> None:
    """Waits until the curated sink has stored a revision naming each of ``report_ids``."""
    start = since.astimezone(UTC).date()
    end = datetime.now(tz=UTC).date() + timedelta(days=1)
    while True:
        stored = await asyncio.to_thread(
            lambda: {rid for example in store.read(start, end) for rid in example.report_ids}
        )
        if report_ids <= stored:
            return
        await reader.poll()


async def fates(ledger: ReportLedger, report_ids: Sequence[str]) -> dict[str, int]:
    """Where ``report_ids`` of the replay tenant stand, counted by ``route:reason``."""
    outcomes = await ledger.get_many(REPLAY_TENANT, report_ids)
    where = Counter(
        "refused" if outcome is None else f"{outcome.route.value}:{outcome.reason}"
        for outcome in outcomes
    )
    return dict(sorted(where.items()))
