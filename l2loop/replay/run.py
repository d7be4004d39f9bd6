"""``l2loop loop replay``: the worker and API as child processes, the cycles, the record and
the table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

from l2loop.demo.loop_replay import draw_reports, sample_prompts, split_halves
from l2loop.demo.reporters import issue_keys
from l2loop.infra.clients import produce_lines
from l2loop.infra.embedded import ManagedProcess, free_port
from l2loop.infra.processes import l2loop_process, running
from l2loop.infra.services import await_services, redis_address, serving
from l2loop.infra.topics import SCAN_EVENTS
from l2loop.logs import get_logger
from l2loop.replay.record import (
    CycleOutcome,
    ReplayError,
    ReplayOptions,
    ReplayRecord,
    ReplayResult,
)
from l2loop.replay.reports import (
    await_curated,
    await_outcomes,
    draw_hostile,
    fates,
    hostile_report_id,
    post_all,
    report_submissions,
    tally_reports,
)
from l2loop.replay.review import review_day
from l2loop.replay.table import cycle_lines, measure, render_replay
from l2loop.replay.traffic import REPLAY_TENANT, VerdictReader, replayable, scan_event
from l2loop.resilience import retry_until_done
from l2loop.schemas.reports import ReportRoute
from l2loop.settings import Settings
from l2loop.stores.shared import curated_store
from l2loop.stores.verdicts import connect
from l2loop.streams.reports import report_services
from l2loop.workers.assembly.period import Period
from l2loop.workers.scheduler import run_exclusively
from l2model.evaluation import LabeledPrompt, read_labeled
from l2model.private import private_dir, write_private
from l2model.registry import ModelPointer
from l2model.runtime import L2Model

log = get_logger(__name__)

# What the loop needs: scoring, the report agent and the curated sink, and the window agent
# because it reads curated-examples too (a worker runs every reader of its topics).
REPLAY_ROLES = "score,reports,windows,curated"
TABLE_FILE = "replay.md"
RECORD_FILE = "replay.json"


def replay_settings(settings: Settings, state_dir: Path, run: str) -> Settings:
    """The replay's own world: topic/key prefix, consumer group, data directory, registry and
    shared state (in that directory, never a production bucket); no alert receivers (its
    windows are not production's). An accepted candidate is
    promoted at once whatever ``L2LOOP_PROMOTION`` says: the replay measures what a cycle
    learnt, so the next cycle's traffic must be scored by it alone, and the replay sends
    traffic only in bursts, one per cycle, never the steady stream a staged rollout needs
    to hold its stages on."""
    return settings.model_copy(
        update={
            "topic_prefix": f"replay-{run}.",
            "app_id": f"l2loop-replay-{run}",
            "data_dir": state_dir,
            "registry_dir": state_dir / "registry",
            "store_url": None,
            "embedded_s3": False,
            "web_port": free_port(),
            "worker_roles": REPLAY_ROLES,
            "alertmanager_url": None,
            "alert_webhook_url": None,
            "promotion": "immediate",
        }
    )


def cycle_period(started: datetime, now: datetime) -> Period:
    """The whole UTC days the replay has run through: the assembler reads curated_at by day,
    so each cycle takes everything curated since the replay started."""
    last = now.astimezone(UTC).date()
    return Period.between(started.astimezone(UTC).date(), last + timedelta(days=1))


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

    store = curated_store(live)
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
