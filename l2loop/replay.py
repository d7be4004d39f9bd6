"""``l2loop loop replay DATA.jsonl``: the whole loop on a user's own labelled prompts.

The file is split into a replayed half and a held-out half (``l2loop.demo.loop_replay``). Each
cycle sends the replayed half to ``scan-events`` as production traffic of one tenant, reads
its verdicts, lets simulated users report a share of the model's false positives and
analysts the same share of its misses over ``POST /v1/reports``, waits until the report
ledger accounts for every report and the curated sink has stored the curated ones, then runs
the quarterly cycle (assemble, retrain, gate, promote on accept) on the curated store, and
measures the model then in service on the held-out half.

Everything runs for real: a ``l2loop worker`` (score, report agent, curated sink) and a
``l2loop api`` as child processes, on the configured broker and Redis or on embedded ones.
A replay never touches anything else: its topics, consumer group and Redis keys (the model
pointer included) carry a prefix of its own, and its curated store, datasets, registry and
candidates live in a directory of its own under ``--out``.

FP reports on a score at or above the high-confidence bar wait in quarantine for a person
(``l2loop review``). With ``--review-share`` a simulated reviewer who knows each prompt's
label works through the quarantine's review groups each cycle, before the quarterly cycle:
largest groups first, within a daily budget of groups and a share of the held reports; it
releases what is true and discards what is not. With ``--hostile-share`` a hostile user
also reports some of the attacks the model flags confidently as false positives: those
must end discarded in review or rejected, never curated.
"""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from l2loop.api.reports import ReportsAnswer, ReportSubmission
from l2loop.demo.loop_replay import (
    DrawnReports,
    Figures,
    analyst_family,
    at_most,
    draw_reports,
    golden_report,
    half_report,
    non_english_benign,
    render_figures,
    sample_prompts,
    split_halves,
)
from l2loop.demo.reporters import issue_keys, post_reports
from l2loop.infra.clients import produce_lines, publisher, topic_reader
from l2loop.infra.embedded import ManagedProcess, free_port
from l2loop.infra.services import await_services, redis_address, serving
from l2loop.infra.topics import SCAN_EVENTS, SCAN_VERDICTS
from l2loop.logs import get_logger
from l2loop.resilience import retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.reports import QuarantinedReport, ReportRoute, ReviewAction
from l2loop.schemas.verdicts import Verdict
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.verdicts import connect
from l2loop.streams.alert_sinks import RECEIVER_ERRORS
from l2loop.streams.defences.admission import ReportLedger
from l2loop.streams.defences.review_groups import ReviewGroup, group_reports
from l2loop.streams.defences.rules import claimed_label
from l2loop.streams.reports import ReportServices, Reviewer, report_services
from l2loop.up import l2loop_process, running
from l2loop.workers.assembly.period import Period
from l2loop.workers.retraining.dataset import base_corpus
from l2loop.workers.scheduler import CycleRecord, run_exclusively
from l2model.evaluation import LabeledPrompt, read_labeled
from l2model.private import private_dir, write_private
from l2model.registry import ModelPointer, ModelRegistry
from l2model.runtime import L2Model

log = get_logger(__name__)

REPLAY_TENANT = "l2loop-replay"
PROBE_TENANT = "l2loop-replay-probe"
# What the loop needs: scoring, the report agent and the curated sink, and the window agent
# because it reads curated-examples too (a worker runs every reader of its topics).
REPLAY_ROLES = "score,reports,windows,curated"
# Who decides in a replay's review log.
REVIEWER = "replay-reviewer"
TABLE_FILE = "replay.md"
RECORD_FILE = "replay.json"
POLL_MS = 500


class ReplayError(RuntimeError):
    """The replay cannot go on (a child process died); the message says where to look."""


@dataclass(frozen=True)
class ReplayOptions:
    share: float
    cycles: int
    seed: int
    out: Path
    sample: int | None = None
    # The simulated reviewer: at most this share of the quarantined reports and this many
    # groups a cycle (its day); 0: nobody reviews.
    review_share: float = 0.0
    review_budget: int = 20
    # The share of confidently flagged attacks a hostile user reports as false positives.
    hostile_share: float = 0.0


class ReportTally(BaseModel):
    """What one cycle's traffic got from the model, what was reported, where it ended."""

    model_config = ConfigDict(frozen=True)

    events: int
    model_version: str
    false_positives: int
    misses: int
    fp_reported: int
    fn_reported: int
    # False-positive claims on attacks the model flagged at or above the high-confidence bar.
    hostile_reported: int = 0
    # The ledger's counters moved by this cycle's reports; rejected (and dead-lettered, which
    # an HTTP report never is) by counter name, e.g. ``rejected:golden_set``.
    curated: int
    quarantined: int
    rejected: dict[str, int]
    # Quota refusals (429) that were posted again after Retry-After: counted by the ledger
    # as rejections, then curated, quarantined or rejected on the later try.
    quota_retries: int

    @property
    def reported(self) -> int:
        return self.fp_reported + self.fn_reported + self.hostile_reported

    @property
    def rejected_finally(self) -> int:
        return sum(self.rejected.values()) - self.quota_retries

    @property
    def accounted(self) -> int:
        return self.curated + self.quarantined + self.rejected_finally


class ReviewTally(BaseModel):
    """What the simulated reviewer did on one cycle's day."""

    model_config = ConfigDict(frozen=True)

    # The replay tenant's quarantined reports when the day began, and their groups.
    pending: int
    groups: int
    groups_reviewed: int
    # Mixed groups (some claims true, some not), decided member by member.
    groups_split: int
    released: int
    discarded: int

    @property
    def reviewed(self) -> int:
        return self.released + self.discarded


class CycleOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    cycle: int
    reports: ReportTally
    record: CycleRecord
    serving_after: str
    review: ReviewTally | None = None
    # Where this cycle's hostile reports stand once its review is done, by ``route:reason``
    # (``refused``: the API refused it).
    hostile: dict[str, int] = Field(default_factory=dict)


class ReplayRecord(BaseModel):
    """``replay.json``: where the run's state is and what each cycle did."""

    data: str
    sample: int | None
    share: float
    seed: int
    review_share: float = 0.0
    review_budget: int = 0
    hostile_share: float = 0.0
    topic_prefix: str
    state_dir: str
    replayed: int
    held_out: int
    not_replayable: int
    start_model: str
    cycles: list[CycleOutcome]


@dataclass(frozen=True)
class ReplayResult:
    record: ReplayRecord
    table: str
    table_path: Path


def replay_settings(settings: Settings, state_dir: Path, run: str) -> Settings:
    """The replay's own world: topic/key prefix, consumer group, data directory, registry;
    no alert receivers (its windows are not production's)."""
    return settings.model_copy(
        update={
            "topic_prefix": f"replay-{run}.",
            "app_id": f"l2loop-replay-{run}",
            "data_dir": state_dir,
            "registry_dir": state_dir / "registry",
            "web_port": free_port(),
            "worker_roles": REPLAY_ROLES,
            "alertmanager_url": None,
            "alert_webhook_url": None,
        }
    )


def replayable(prompts: Sequence[LabeledPrompt]) -> list[LabeledPrompt]:
    """The prompts a scanner could send: a ScanEvent holds at most 32 KiB of non-blank text
    (anything else is dead-lettered, never scored)."""
    kept = []
    for prompt in prompts:
        try:
            ScanEvent(event_id="x", ts=datetime.now(tz=UTC), tenant_id="x", text=prompt.text)
        except ValidationError:
            continue
        kept.append(prompt)
    return kept


def cycle_period(started: datetime, now: datetime) -> Period:
    """The whole UTC days the replay has run through: the assembler reads curated_at by day,
    so each cycle takes everything curated since the replay started."""
    last = now.astimezone(UTC).date()
    return Period.between(started.astimezone(UTC).date(), last + timedelta(days=1))


def still_running(process: ManagedProcess) -> None:
    """Raises ReplayError, naming the child's log, when ``process`` has exited."""
    if process.exit_code is not None:
        raise ReplayError(
            f"the {process.name} exited with code {process.exit_code}; see {process.log_path}"
        )


class VerdictReader:
    """Reads scan-verdicts from the start, keeping every verdict by event id; gives up when
    the worker that should write them has died."""

    def __init__(self, settings: Settings, worker: ManagedProcess) -> None:
        self._settings = settings
        self._worker = worker
        self._consumer = topic_reader(settings, settings.topic(SCAN_VERDICTS), from_beginning=True)
        self.seen: dict[str, Verdict] = {}

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self) -> None:
        still_running(self._worker)
        batches = await self._consumer.getmany(timeout_ms=POLL_MS, max_records=5000)
        for records in batches.values():
            for record in records:
                verdict = Verdict.model_validate_json(record.value)
                self.seen[verdict.event_id] = verdict

    async def collect(self, event_ids: Sequence[str]) -> list[Verdict]:
        """The verdicts of ``event_ids``, in order, once all have come."""
        while any(event_id not in self.seen for event_id in event_ids):
            await self.poll()
        return [self.seen[event_id] for event_id in event_ids]

    async def await_version(self, version: str) -> None:
        """Sends a probe now and then until one is scored by ``version``: the worker serves
        it (it follows the pointer between batches) and has joined its group."""
        number = 0
        while True:
            probe = f"probe-{version}-{number}"
            await produce_lines(
                self._settings,
                self._settings.topic(SCAN_EVENTS),
                [scan_event(probe, PROBE_TENANT, "replay probe: which model serves now?")],
            )
            for _ in range(4):
                await self.poll()
                verdict = self.seen.get(probe)
                if verdict is not None:
                    if verdict.model_version == version:
                        return
                    break
            number += 1


def scan_event(event_id: str, tenant: str, text: str) -> bytes:
    return to_bytes(
        ScanEvent(event_id=event_id, ts=datetime.now(tz=UTC), tenant_id=tenant, text=text)
    )


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


# Why the simulated reviewer decides as it does, in the review log.
REVIEW_WHY: dict[ReviewAction, str] = {
    "release": "the replayed prompt's label agrees with the claim",
    "discard": "the replayed prompt's label contradicts the claim",
}


@dataclass(frozen=True)
class ReviewStep:
    """One group the simulated reviewer opened, and its decision on each member, in order."""

    group: ReviewGroup
    actions: tuple[ReviewAction, ...]

    def decided(self, action: ReviewAction) -> list[QuarantinedReport]:
        return [
            item
            for item, chosen in zip(self.group.members, self.actions, strict=True)
            if chosen == action
        ]

    @property
    def split(self) -> bool:
        return len(set(self.actions)) > 1


def review_plan(
    groups: Sequence[ReviewGroup], truth: Mapping[str, int], *, share: float, budget: int
) -> list[ReviewStep]:
    """One day of a reviewer who knows the label of every event (``truth``, by event id):
    groups in the order listed (largest first), at most ``budget`` of them and at most
    ``share`` of the reports they hold; a group larger than what is left of the share is
    passed over for smaller ones. A claim that agrees with the truth (a false positive on a
    benign prompt, a miss on an attack) is released, one that contradicts it discarded: a
    group of one or the other is decided whole, a mixed one member by member."""
    allowance = at_most(share, sum(group.size for group in groups))
    steps: list[ReviewStep] = []
    for group in groups:
        if len(steps) == budget:
            break
        if group.size > allowance:
            continue
        allowance -= group.size
        actions: tuple[ReviewAction, ...] = tuple(
            "release" if claimed_label(item.report) == truth[item.report.event_id] else "discard"
            for item in group.members
        )
        steps.append(ReviewStep(group, actions))
    return steps


async def review_day(
    live: Settings, services: ReportServices, truth: Mapping[str, int], options: ReplayOptions
) -> tuple[ReviewTally, set[str]]:
    """The simulated reviewer's day on the replay tenant's quarantine (``review_plan``),
    each decision made as ``l2loop review`` makes it; the tally and the released report
    ids."""
    pending = [
        item for item in await services.queue.pending() if item.report.tenant_id == REPLAY_TENANT
    ]
    groups = group_reports(pending, similarity=live.review_group_similarity)
    steps = review_plan(groups, truth, share=options.review_share, budget=options.review_budget)
    async with publisher(live) as publish:
        reviewer = Reviewer.of(services, publish, live)
        for step in steps:
            for item, action in zip(step.group.members, step.actions, strict=True):
                await reviewer.decide(
                    item, action, REVIEWER, REVIEW_WHY[action], group_id=step.group.group_id
                )
    released = {item.report.report_id for step in steps for item in step.decided("release")}
    tally = ReviewTally(
        pending=len(pending),
        groups=len(groups),
        groups_reviewed=len(steps),
        groups_split=sum(step.split for step in steps),
        released=len(released),
        discarded=sum(len(step.decided("discard")) for step in steps),
    )
    return tally, released


async def fates(ledger: ReportLedger, report_ids: Sequence[str]) -> dict[str, int]:
    """Where ``report_ids`` of the replay tenant stand, counted by ``route:reason``."""
    outcomes = await ledger.get_many(REPLAY_TENANT, report_ids)
    where = Counter(
        "refused" if outcome is None else f"{outcome.route.value}:{outcome.reason}"
        for outcome in outcomes
    )
    return dict(sorted(where.items()))


async def run_cycles(
    live: Settings,
    options: ReplayOptions,
    replayed: Sequence[LabeledPrompt],
    start: L2Model,
    worker: ManagedProcess,
    api: ManagedProcess,
    echo: Callable[[str], None],
) -> list[CycleOutcome]:
    started = datetime.now(tz=UTC)
    key = (await issue_keys(live, [REPLAY_TENANT]))[REPLAY_TENANT]
    client = connect(live.redis_dsn)
    services = report_services(live, client)
    ledger = services.ledger
    # The label of every event replayed so far: what the simulated reviewer knows.
    truth: dict[str, int] = {}

    pointer = ModelPointer(client, key_prefix=live.topic_prefix)

    async def ledger_counts() -> dict[str, int]:
        return await retry_until_done(
            ledger.counts, dependency="redis", what="replay_counts", backoff=live.backoff
        )

    async def serving_version() -> str:
        """The version the registry pointer names (the scorers follow it), else the start's."""
        current = await retry_until_done(
            pointer.current, dependency="redis", what="replay_pointer", backoff=live.backoff
        )
        return start.version if current is None else current.version

    store = CuratedStore(live.data_dir, hash_unflagged=live.hash_unflagged_texts)
    reader = VerdictReader(live, worker)
    labels = np.array([p.label for p in replayed])
    outcomes: list[CycleOutcome] = []
    in_service = start.version
    await reader.start()
    try:
        for cycle in range(1, options.cycles + 1):
            await reader.await_version(in_service)
            tag = f"c{cycle}"
            event_ids = [f"{tag}-{index}" for index in range(len(replayed))]
            echo(f"cycle {cycle}: {len(replayed)} events, model {in_service}")
            await produce_lines(
                live,
                live.topic(SCAN_EVENTS),
                (
                    scan_event(event_id, REPLAY_TENANT, prompt.text)
                    for event_id, prompt in zip(event_ids, replayed, strict=True)
                ),
            )
            verdicts = await reader.collect(event_ids)
            truth.update(zip(event_ids, labels.tolist(), strict=True))
            flagged = np.array([verdict.is_threat for verdict in verdicts])
            drawn = draw_reports(
                labels, flagged, share=options.share, seed=options.seed + cycle - 1
            )
            hostile = draw_hostile(
                labels,
                verdicts,
                bar=live.report_high_confidence_score,
                share=options.hostile_share,
                seed=options.seed + cycle - 1,
            )
            submissions = report_submissions(replayed, verdicts, drawn.fp, drawn.fn, tag, hostile)
            echo(
                f"  errors: {drawn.false_positives} false positives, {drawn.misses} misses; "
                f"reporting {len(drawn.fp)} FPs and {len(drawn.fn)} misses over the API"
                + (f", and {len(hostile)} hostile FP claims on attacks" if hostile else "")
            )
            counted_before = await ledger_counts()
            posted = await post_all(live, api, key, submissions, echo)
            decided = await await_outcomes(live, ledger, posted.accepted, reader)
            curated = {rid for rid, route in decided.items() if route is ReportRoute.CURATED}
            review = None
            if options.review_share > 0:
                review, released = await review_day(live, services, truth, options)
                curated |= released
            await await_curated(store, curated, started, reader)
            tally = tally_reports(
                counted_before,
                await ledger_counts(),
                posted.quota_retries,
                events=len(replayed),
                model_version=in_service,
                drawn=drawn,
                hostile=len(hostile),
            )
            hostile_fates = await fates(ledger, [hostile_report_id(tag, i) for i in hostile])
            period = cycle_period(started, datetime.now(tz=UTC))
            echo(f"  quarterly cycle on {period.name}: assemble, retrain, gate, promote")
            record = await run_exclusively(live, period, retrain=True, once=False)
            if record is None:
                raise ReplayError(f"a cycle of {period.name} is running elsewhere")
            in_service = await serving_version()
            outcome = CycleOutcome(
                cycle=cycle,
                reports=tally,
                record=record,
                serving_after=in_service,
                review=review,
                hostile=hostile_fates,
            )
            echo("\n".join(cycle_lines(outcome)))
            log.info(
                "replay_cycle_finished",
                cycle=cycle,
                reported=tally.reported,
                curated=tally.curated,
                quarantined=tally.quarantined,
                rejected=tally.rejected_finally,
                released_in_review=review.released if review is not None else 0,
                discarded_in_review=review.discarded if review is not None else 0,
                dataset=record.dataset_version,
                candidate=record.candidate_version,
                accepted=record.accepted,
                serving=in_service,
            )
            outcomes.append(outcome)
    finally:
        await reader.stop()
        await client.aclose()
    return outcomes


def cycle_lines(cycle: CycleOutcome) -> list[str]:
    """What a cycle did: errors, reports and where the ledger says they ended, the review,
    the hostile reports' fate, the decision."""
    r, c, v = cycle.reports, cycle.record, cycle.review
    rejected = ", ".join(f"{k} {n}" for k, n in r.rejected.items()) or "none"
    retried = f"; {r.quota_retries} quota refusals posted again" if r.quota_retries else ""
    hostile = f" + {r.hostile_reported} hostile" if r.hostile_reported else ""
    lines = [
        f"- cycle {cycle.cycle}: {r.events} events scored by {r.model_version}: "
        f"{r.false_positives} false positives, {r.misses} misses; reported "
        f"{r.fp_reported} FPs + {r.fn_reported} misses{hostile} = {r.reported}: curated "
        f"{r.curated}, quarantined {r.quarantined}, rejected {r.rejected_finally} "
        f"({rejected}{retried})",
    ]
    if v is not None:
        lines.append(
            f"  - review: {v.reviewed} of {v.pending} quarantined reports in "
            f"{v.groups_reviewed} of {v.groups} groups ({v.groups_split} mixed, decided "
            f"member by member): released {v.released}, discarded {v.discarded}"
        )
    if cycle.hostile:
        where = ", ".join(f"{k} {n}" for k, n in cycle.hostile.items())
        lines.append(f"  - hostile reports after review: {where}")
    lines.append(
        f"  - {c.decision()}; serving {cycle.serving_after}"
        + (f"; report {c.report}" if c.report else "")
    )
    return lines


def table_columns(record: ReplayRecord) -> list[tuple[str, str]]:
    """The models the table measures, as (heading, version): the one in service at the
    start, the one in service after each cycle, and each rejected candidate (what the gate
    kept out of service)."""
    columns = [("before", record.start_model)]
    for cycle in record.cycles:
        columns.append((f"after cycle {cycle.cycle}", cycle.serving_after))
        candidate = cycle.record.candidate_version
        if candidate is not None and not cycle.record.promoted:
            columns.append((f"cycle {cycle.cycle} candidate, rejected", candidate))
    return columns


def measure(
    record: ReplayRecord,
    held_out: Sequence[LabeledPrompt],
    start: L2Model,
    settings: Settings,
) -> list[Figures]:
    """Every column of the table, each version scored once."""
    registry = ModelRegistry(settings.registry_root)
    non_english = non_english_benign(
        settings.golden_version, base_corpus(settings.base_corpus_size, settings.base_corpus_seed)
    )
    measured: dict[str, tuple[dict[str, object], dict[str, float | int]]] = {}
    columns = []
    for heading, version in table_columns(record):
        if version not in measured:
            model = start if version == start.version else L2Model.load(registry.path(version))
            measured[version] = (
                half_report(held_out, model),
                golden_report(model, settings.golden_version, non_english),
            )
        columns.append(Figures(f"{heading} ({version})", *measured[version]))
    return columns


def review_line(record: ReplayRecord) -> str:
    if not record.review_share:
        return (
            "- FP reports scored at or above the high-confidence bar wait in quarantine; "
            "nobody reviews them in this replay"
        )
    return (
        "- each cycle a reviewer who knows every prompt's label works through the quarantine "
        f"in review groups, largest first: at most {record.review_budget} groups and "
        f"{record.review_share} of the held reports; true claims are released, the others "
        "discarded"
    )


def render_replay(record: ReplayRecord, data: Path, columns: Sequence[Figures]) -> str:
    lines = [
        f"# Loop replay on {data.name} (report share {record.share}, seed {record.seed}"
        + (f", sample {record.sample}" if record.sample is not None else "")
        + (f", review share {record.review_share}" if record.review_share else "")
        + (f", hostile share {record.hostile_share}" if record.hostile_share else "")
        + ")",
        "",
        f"- replayed half {record.replayed} prompts"
        + (
            f" ({record.not_replayable} not sendable as scan events)"
            if record.not_replayable
            else ""
        )
        + f", held-out half {record.held_out}; model at start {record.start_model}",
        f"- state: {record.state_dir} (topic and key prefix `{record.topic_prefix}`)",
        review_line(record),
    ]
    if record.hostile_share:
        lines.append(
            f"- a hostile user reports {record.hostile_share} of the attacks flagged at or "
            "above the high-confidence bar as false positives: each must end discarded in "
            "review or rejected, never curated"
        )
    for cycle in record.cycles:
        lines += cycle_lines(cycle)
    return "\n".join([*lines, "", *render_figures(columns)]) + "\n"


def run_replay(
    settings: Settings, data: Path, options: ReplayOptions, echo: Callable[[str], None]
) -> ReplayResult:
    """The whole replay; starts and stops embedded services when none are configured, and
    the worker and API as child processes (from this, the main, thread)."""
    prompts = read_labeled(data)
    if options.sample is not None:
        prompts = sample_prompts(prompts, options.sample, options.seed)
    replayed_half, held_out = split_halves(prompts, options.seed)
    replayed = replayable(replayed_half)
    run = f"{datetime.now(tz=UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    out = options.out.resolve()
    state_dir = out / run
    isolated = replay_settings(
        settings.model_copy(update={"model_dir": settings.model_dir.resolve()}), state_dir, run
    )
    start = L2Model.load(isolated.model_dir)
    with serving(isolated) as (live, _):
        asyncio.run(await_services(live))
        echo(
            f"loop replay: {len(replayed)} prompts replayed, {len(held_out)} held out; broker "
            f"{','.join(live.bootstrap_servers)}, redis {redis_address(live.redis_dsn)}, "
            f"prefix {live.topic_prefix}; state in {state_dir}"
        )
        logs = state_dir / "logs"
        api_port = free_port()
        worker = l2loop_process(live, "worker", ("worker",), live.web_port, logs / "worker.log")
        api = l2loop_process(
            live, "api", ("api", "--port", str(api_port)), api_port, logs / "api.log"
        )
        with running(worker), running(api):
            api.wait_until_ready(live.startup_timeout_s)
            cycles = asyncio.run(
                run_cycles(
                    live,
                    options,
                    replayed,
                    start,
                    worker,
                    api,
                    echo,
                )
            )
    record = ReplayRecord(
        data=str(data),
        sample=options.sample,
        share=options.share,
        seed=options.seed,
        review_share=options.review_share,
        review_budget=options.review_budget,
        hostile_share=options.hostile_share,
        topic_prefix=isolated.topic_prefix,
        state_dir=str(state_dir),
        replayed=len(replayed),
        held_out=len(held_out),
        not_replayable=len(replayed_half) - len(replayed),
        start_model=start.version,
        cycles=cycles,
    )
    table = render_replay(record, data, measure(record, held_out, start, isolated))
    private_dir(state_dir)
    write_private(
        state_dir / RECORD_FILE,
        orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
    )
    table_path = out / TABLE_FILE
    write_private(table_path, table)
    write_private(state_dir / TABLE_FILE, table)
    return ReplayResult(record, table, table_path)
