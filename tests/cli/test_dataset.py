"""``l2loop dataset assemble``: the period it asks for, and the lock it shares with the
scheduler (the cycle body stands in for the assembler and trainer)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest
import redis
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.settings import Settings
from l2loop.workers import scheduler as scheduler_module
from l2loop.workers.assembly.period import Period
from l2loop.workers.scheduler import CycleRecord


@pytest.fixture
def periods(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Period, bool]]:
    asked: list[tuple[Period, bool]] = []

    def run(settings: Settings, period: Period, *, retrain: bool) -> CycleRecord:
        asked.append((period, retrain))
        return CycleRecord(
            period=period.name,
            start=period.start,
            end=period.end,
            dataset_version="v-test",
            dataset_path="-",
            retrained=retrain,
            finished_at=datetime.now(tz=UTC),
        )

    monkeypatch.setattr(scheduler_module, "run_quarterly_cycle", run)
    return asked


def test_a_quarter_or_a_range_runs_now_even_when_done_before(
    settings: Settings, redis_client: redis.Redis, periods: list[tuple[Period, bool]]
) -> None:
    runner, env = CliRunner(), settings.to_env()
    for _ in range(2):
        result = runner.invoke(main, ["dataset", "assemble", "--quarter", "2026Q3"], env=env)
        assert result.exit_code == 0, result.output
    assert periods == [(Period.quarter("2026Q3"), False)] * 2
    assert orjson.loads(result.stdout)["period"] == "2026Q3"
    result = runner.invoke(
        main,
        ["dataset", "assemble", "--since", "2026-08-01", "--until", "2026-09-01", "--retrain"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    period, retrain = periods[-1]
    assert (period, retrain) == (Period.between(date(2026, 8, 1), date(2026, 9, 1)), True)
    assert period.name == "20260801-20260901"


def test_a_period_being_assembled_elsewhere_is_refused(
    settings: Settings, redis_client: redis.Redis, periods: list[tuple[Period, bool]]
) -> None:
    redis_client.set(f"{settings.topic_prefix}scheduler:lock:2026Q3", "another-token", px=60_000)
    result = CliRunner().invoke(
        main, ["dataset", "assemble", "--quarter", "2026Q3"], env=settings.to_env()
    )
    assert result.exit_code == 1
    assert "running elsewhere" in result.output
    assert periods == []


@pytest.mark.parametrize(
    "arguments",
    [
        ["--quarter", "2026Q3", "--since", "2026-07-01", "--until", "2026-08-01"],
        ["--since", "2026-07-01"],
        ["--quarter", "2026Q7"],
        ["--since", "2026-08-01", "--until", "2026-07-01"],
    ],
)
def test_bad_periods_are_usage_errors(settings: Settings, arguments: list[str]) -> None:
    result = CliRunner().invoke(main, ["dataset", "assemble", *arguments], env=settings.to_env())
    assert result.exit_code == 2, result.output
