"""The quarterly cycle: assemble the quarter's dataset, then retrain, gate and release.

APScheduler 3 fires it on a cron (``scheduler_cron``, default 02:00 UTC on the first day of
January, April, July and October) for the quarter that has just ended; ``l2loop dataset
assemble`` runs the same cycle on demand for any quarter or date range.

- The job lives in Redis (``RedisJobStore``), so a restarted scheduler keeps its next run
  time, and a run missed by less than ``scheduler_misfire_grace_s`` (the scheduler was down
  at 02:00) still starts when it comes back; several missed runs start once (coalesce).
- Every scheduler deployed reads the same job and may fire it: a per-period Redis lock (a
  token set with NX and an expiry, renewed while the cycle runs, released by compare-and-
  delete: redis-py's ``Lock``) lets one run it, and a per-period record of the finished
  cycle makes a scheduler that fires later for the same quarter do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import cast

import redis
import redis.asyncio as aioredis
from apscheduler.executors.base import BaseExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from pydantic import AwareDatetime, BaseModel, ConfigDict
from redis.connection import parse_url
from redis.exceptions import LockError

from l2loop.logs import get_logger
from l2loop.resilience import retry_until_done
from l2loop.schemas.common import utc_now
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2loop.workers.assembler import assemble_dataset
from l2loop.workers.assembly.period import Period
from l2loop.workers.retraining.release import Release

log = get_logger(__name__)

JOB_ID = "quarterly-cycle"


def due_period(moment: datetime) -> Period:
    """The period a cycle at ``moment`` learns from: the last quarter that ended at or
    before it, in UTC days."""
    return Period.quarter_before(moment.astimezone(UTC).date())


class CycleRecord(BaseModel):
    """What one cycle did; kept in Redis per period (``scheduler:cycles``)."""

    model_config = ConfigDict(frozen=True)

    period: str
    start: date
    end: date
    dataset_version: str
    dataset_path: str
    retrained: bool
    candidate_version: str | None = None
    accepted: bool | None = None
    promoted: bool | None = None
    # What became of an accepted candidate: promoted, a rollout started, or none could start.
    release: Release | None = None
    report: str | None = None
    # The counterfactual replay's one line (decision 0021), when the cycle retrained.
    traffic_replay: str | None = None
    finished_at: AwareDatetime

    def decision(self) -> str:
        """One line: the dataset, and the candidate with the gate's decision and its release."""
        if self.candidate_version is None:
            return f"dataset {self.dataset_version} (not retrained)"
        replay = f"; traffic replay: {self.traffic_replay}" if self.traffic_replay else ""
        released = (
            self.release.summary()
            if self.release is not None
            else ("promoted" if self.promoted else "not promoted")
        )
        return (
            f"dataset {self.dataset_version}; candidate {self.candidate_version}: gate "
            f"{'ACCEPTED' if self.accepted else 'REJECTED'}, {released}{replay}"
        )


def run_quarterly_cycle(settings: Settings, period: Period, *, retrain: bool) -> CycleRecord:
    """Assembles the period's dataset; with ``retrain``, trains, gates and (on accept)
    releases a candidate on it. Synchronous and CPU-bound: runs in a worker thread."""
    # Imported on use: the trainers bring scikit-learn and ONNX (seconds to import), which
    # the scheduler process needs only when a cycle retrains.
    from l2loop.workers.retrain import retrain as retrain_on

    dataset = assemble_dataset(settings, period)
    dataset_path = Path(dataset.path)
    outcome = retrain_on(settings, dataset_path, period.trained_through) if retrain else None
    return CycleRecord(
        period=period.name,
        start=period.start,
        end=period.end,
        dataset_version=str(dataset.version),
        dataset_path=str(dataset_path),
        retrained=outcome is not None,
        candidate_version=None if outcome is None else outcome.candidate_version,
        accepted=None if outcome is None else outcome.accepted,
        promoted=None if outcome is None else outcome.promoted,
        release=None if outcome is None else outcome.release,
        report=None if outcome is None else outcome.report,
        traffic_replay=(
            None
            if outcome is None or outcome.counterfactual is None
            else outcome.counterfactual.summary()
        ),
        finished_at=utc_now(),
    )


def _keys(settings: Settings, period: Period) -> tuple[str, str]:
    prefix = settings.topic_prefix
    return f"{prefix}scheduler:lock:{period.name}", f"{prefix}scheduler:cycles"


async def _renew(lock: aioredis.lock.Lock, ttl_s: float) -> None:
    while True:
        await asyncio.sleep(ttl_s / 3)
        await lock.reacquire()


async def run_exclusively(
    settings: Settings, period: Period, *, retrain: bool, once: bool
) -> CycleRecord | None:
    """Runs the cycle of ``period`` unless another process holds its lock, or (``once``) a
    cycle of it already finished; returns what it did, None when it did nothing."""
    lock_key, cycles_key = _keys(settings, period)
    client = connect(settings.redis_dsn)
    lock = client.lock(lock_key, timeout=settings.scheduler_lock_ttl_s, thread_local=False)
    try:
        acquired = await retry_until_done(
            lambda: lock.acquire(blocking=False),
            dependency="redis",
            what="cycle_lock",
            backoff=settings.backoff,
        )
        if not acquired:
            log.info("cycle_running_elsewhere", period=period.name)
            return None
        renewal = asyncio.create_task(_renew(lock, settings.scheduler_lock_ttl_s))
        try:
            if once and await client.hexists(cycles_key, period.name):
                log.info("cycle_already_done", period=period.name)
                return None
            log.info("cycle_started", period=period.name, retrain=retrain)
            record = await asyncio.to_thread(run_quarterly_cycle, settings, period, retrain=retrain)
            await retry_until_done(
                lambda: cast(
                    "asyncio.Future[int]",
                    client.hset(cycles_key, period.name, record.model_dump_json()),
                ),
                dependency="redis",
                what="cycle_record",
                backoff=settings.backoff,
            )
            log.info("cycle_finished", **record.model_dump(mode="json"))
            return record
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(LockError):
                await lock.release()
    finally:
        await client.aclose()


def scheduled_cycle(settings: Settings) -> None:
    """The cron job: the cycle of the quarter that has just ended, once however many
    schedulers fire it."""
    period = due_period(utc_now())
    asyncio.run(run_exclusively(settings, period, retrain=settings.scheduler_retrain, once=True))


def cron_trigger(settings: Settings) -> CronTrigger:
    return CronTrigger.from_crontab(settings.scheduler_cron, timezone=UTC)


def _job_store_keys(settings: Settings) -> tuple[str, str]:
    """The job store's hash of jobs and sorted set of their next run times."""
    prefix = settings.topic_prefix
    return f"{prefix}scheduler:jobs", f"{prefix}scheduler:run_times"


def next_cycle_at(settings: Settings) -> datetime | None:
    """When the quarterly job runs next, as the job store keeps it; None while no scheduler
    has stored it. Reads the run times only: the job itself is a pickle of code and settings."""
    client = redis.Redis.from_url(settings.redis_dsn)
    try:
        run_at = client.zscore(_job_store_keys(settings)[1], JOB_ID)
    finally:
        client.close()
    return None if run_at is None else datetime.fromtimestamp(run_at, tz=UTC)


def configure_scheduler(
    scheduler: BaseScheduler, settings: Settings, executor: BaseExecutor | None = None
) -> BaseScheduler:
    """Redis job store, one worker thread (or ``executor``), coalesced runs within the
    misfire grace."""
    # RedisJobStore makes its own sync client from keyword arguments, not from a URL.
    connection = parse_url(settings.redis_dsn)  # type: ignore[no-untyped-call]
    jobs_key, run_times_key = _job_store_keys(settings)
    scheduler.configure(
        jobstores={
            "default": RedisJobStore(jobs_key=jobs_key, run_times_key=run_times_key, **connection)
        },
        executors={"default": executor or ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "misfire_grace_time": settings.scheduler_misfire_grace_s,
            "max_instances": 1,
        },
        timezone=UTC,
    )
    return scheduler


def start_scheduler(scheduler: BaseScheduler, settings: Settings) -> None:
    """Starts ``scheduler`` (configured) with the quarterly job. A job already stored keeps its
    next run time, so a scheduler restarted after a missed run still runs it within the
    grace; only a changed cron reschedules it."""
    scheduler.start(paused=True)
    trigger = cron_trigger(settings)
    job = scheduler.get_job(JOB_ID)
    if job is None:
        scheduler.add_job(
            scheduled_cycle,
            trigger=trigger,
            kwargs={"settings": settings},
            id=JOB_ID,
            name="quarterly dataset and retraining cycle",
        )
    else:
        job.modify(kwargs={"settings": settings})
        if str(job.trigger) != str(trigger):
            job.reschedule(trigger)
    next_run = scheduler.get_job(JOB_ID).next_run_time
    log.info("scheduler_started", cron=settings.scheduler_cron, next_run=str(next_run))
    scheduler.resume()
