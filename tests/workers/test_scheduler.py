"""The quarterly scheduler on a fake clock, with its job store and lock in the real Redis.

APScheduler reads the time with ``datetime.now`` in its scheduler and executor modules; the
``clock`` fixture replaces that name there (and ``workers.scheduler.utc_now``) with a clock
the test moves. ``DrivenScheduler`` runs due jobs only when the test calls ``tick``, in the
calling thread, so nothing depends on timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
import redis
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.base import BaseScheduler

from l2loop.settings import Settings
from l2loop.workers import scheduler as scheduler_module
from l2loop.workers.assembly.period import Period
from l2loop.workers.retraining.release import Release
from l2loop.workers.scheduler import (
    JOB_ID,
    CycleRecord,
    configure_scheduler,
    due_period,
    next_cycle_at,
    scheduled_cycle,
    start_scheduler,
)


@dataclass
class Clock:
    now: datetime

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(datetime(2026, 3, 31, 12, 0, tzinfo=UTC))

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return fake.now.astimezone(tz) if tz is not None else fake.now.replace(tzinfo=None)

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", FakeDatetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", FakeDatetime)
    monkeypatch.setattr(scheduler_module, "utc_now", lambda: fake.now)
    return fake


class DrivenScheduler(BaseScheduler):  # type: ignore[misc]  # apscheduler ships no types
    """Processes due jobs only in ``tick``."""

    def wakeup(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def tick(self) -> None:
        self._process_jobs()


@dataclass
class Cycles:
    """Stands in for the cycle body: records each run; ``hold`` keeps a run going."""

    runs: list[tuple[str, datetime]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    hold: threading.Event | None = None


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Cycles:
    recorded = Cycles()

    def run(settings: Settings, period: Period, *, retrain: bool) -> CycleRecord:
        recorded.runs.append((period.name, clock.now))
        recorded.started.set()
        if recorded.hold is not None:
            recorded.hold.wait(timeout=30)
        return CycleRecord(
            period=period.name,
            start=period.start,
            end=period.end,
            dataset_version="test",
            dataset_path="-",
            retrained=retrain,
            finished_at=clock.now,
        )

    monkeypatch.setattr(scheduler_module, "run_quarterly_cycle", run)
    return recorded


@pytest.fixture
def schedulers(settings: Settings, redis_client: redis.Redis) -> Iterator[list[DrivenScheduler]]:
    started: list[DrivenScheduler] = []
    yield started
    for scheduler in started:
        if scheduler.running:
            scheduler.shutdown(wait=False)


def _start(settings: Settings, started: list[DrivenScheduler]) -> DrivenScheduler:
    scheduler = configure_scheduler(DrivenScheduler(), settings, DebugExecutor())
    start_scheduler(scheduler, settings)
    started.append(scheduler)
    return scheduler


def test_a_cycle_learns_from_the_quarter_that_ended_before_its_utc_day() -> None:
    q3 = Period.quarter("2026Q3")
    assert (q3.start, q3.end) == (date(2026, 7, 1), date(2026, 10, 1))
    assert q3.trained_through == datetime(2026, 10, 1, tzinfo=UTC)
    assert Period.quarter("2026Q4").trained_through == datetime(2027, 1, 1, tzinfo=UTC)
    assert due_period(datetime(2027, 1, 1, 2, tzinfo=UTC)).name == "2026Q4"
    assert due_period(datetime(2026, 4, 1, 2, tzinfo=UTC)).name == "2026Q1"
    assert due_period(datetime(2026, 6, 30, 23, tzinfo=UTC)).name == "2026Q1"
    # The UTC day decides, not the moment's own calendar.
    assert due_period(datetime(2026, 3, 31, 23, tzinfo=timezone(timedelta(hours=-5)))).name == (
        "2026Q1"
    )
    assert due_period(datetime(2026, 4, 1, 1, tzinfo=timezone(timedelta(hours=2)))).name == (
        "2025Q4"
    )
    with pytest.raises(ValueError):
        Period.quarter("2026Q5")


def test_the_next_cycle_is_read_from_the_job_store(
    settings: Settings, clock: Clock, schedulers: list[DrivenScheduler]
) -> None:
    assert next_cycle_at(settings) is None
    _start(settings, schedulers)
    assert next_cycle_at(settings) == datetime(2026, 4, 1, 2, tzinfo=UTC)


def test_two_schedulers_run_each_quarter_once_over_a_year(
    settings: Settings, clock: Clock, cycles: Cycles, schedulers: list[DrivenScheduler]
) -> None:
    first, second = _start(settings, schedulers), _start(settings, schedulers)
    end = datetime(2027, 3, 1, tzinfo=UTC)
    turn = 0
    while clock.now < end:
        clock.advance(timedelta(hours=5))
        # Either may look first; both share one job in Redis.
        for scheduler in (first, second) if turn % 2 else (second, first):
            scheduler.tick()
        turn += 1
    assert [label for label, _ in cycles.runs] == ["2026Q1", "2026Q2", "2026Q3", "2026Q4"]
    fired = [(moment.month, moment.day) for _, moment in cycles.runs]
    assert fired == [(4, 1), (7, 1), (10, 1), (1, 1)]
    # Each ran at the first tick at or after 02:00, within five hours.
    assert all(
        timedelta(0) <= moment - moment.replace(hour=2, minute=0) < timedelta(hours=5)
        for _, moment in cycles.runs
    )


def test_a_quarter_fired_by_two_schedulers_at_once_runs_once(
    settings: Settings, clock: Clock, cycles: Cycles, schedulers: list[DrivenScheduler]
) -> None:
    first, second = _start(settings, schedulers), _start(settings, schedulers)
    clock.now = datetime(2026, 4, 1, 2, 30, tzinfo=UTC)
    cycles.hold = threading.Event()
    running = threading.Thread(target=first.tick)
    running.start()
    assert cycles.started.wait(timeout=30)
    # The first is inside the cycle and has not moved the job's next run time yet: the
    # second sees the job due and fires it too, and the lock turns it away.
    assert second.get_job(JOB_ID).next_run_time <= clock.now
    second.tick()
    cycles.hold.set()
    running.join(timeout=30)
    assert [label for label, _ in cycles.runs] == ["2026Q1"]
    # A scheduler that fires later for the same quarter finds it done.
    clock.advance(timedelta(hours=1))
    scheduled_cycle(settings)
    assert [label for label, _ in cycles.runs] == ["2026Q1"]


def test_a_run_missed_within_the_grace_still_runs_after_a_restart(
    settings: Settings, clock: Clock, cycles: Cycles, schedulers: list[DrivenScheduler]
) -> None:
    assert settings.scheduler_misfire_grace_s == 6 * 3600
    _start(settings, schedulers).shutdown(wait=False)
    # Down over 02:00; back three hours later: the stored job is still due.
    clock.now = datetime(2026, 4, 1, 5, 0, tzinfo=UTC)
    _start(settings, schedulers).tick()
    assert [label for label, _ in cycles.runs] == ["2026Q1"]


def test_a_run_missed_beyond_the_grace_is_skipped(
    settings: Settings, clock: Clock, cycles: Cycles, schedulers: list[DrivenScheduler]
) -> None:
    scheduler = _start(settings, schedulers)
    clock.now = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)  # seven hours late
    scheduler.tick()
    assert cycles.runs == []
    assert scheduler.get_job(JOB_ID).next_run_time == datetime(2026, 7, 1, 2, tzinfo=UTC)


def test_a_cycle_line_says_how_an_accepted_candidate_was_released() -> None:
    def record(accepted: bool, release: Release | None) -> CycleRecord:
        return CycleRecord(
            period="2026Q1",
            start=date(2026, 1, 1),
            end=date(2026, 4, 1),
            dataset_version="2026Q1-1",
            dataset_path="-",
            retrained=True,
            candidate_version="1.1.0",
            accepted=accepted,
            promoted=release is not None and release.how == "promoted",
            release=release,
            finished_at=datetime(2026, 4, 1, 2, tzinfo=UTC),
        )

    started = Release(how="rollout", run_id="r1", stages=["shadow", "10", "50", "100"])
    refused = Release(how="refused", reason="rollout r0 of 1.0.5 is running at 10; abort it first")
    lines = {
        "rollout": record(True, started).decision(),
        "immediate": record(True, Release(how="promoted")).decision(),
        "refused": record(True, refused).decision(),
        "rejected": record(False, None).decision(),
    }
    prefix = "dataset 2026Q1-1; candidate 1.1.0: gate"
    assert lines == {
        "rollout": f"{prefix} ACCEPTED, rollout r1 started (shadow,10,50,100)",
        "immediate": f"{prefix} ACCEPTED, promoted",
        "refused": f"{prefix} ACCEPTED, rollout not started: rollout r0 of 1.0.5 is running at "
        "10; abort it first",
        "rejected": f"{prefix} REJECTED, not promoted",
    }
