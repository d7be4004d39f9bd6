"""Poison among valid records: every kind the decoder knows, values Python cannot represent
included; the agent neither stops nor restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis

from l2loop.demo.traffic import MALFORMED
from l2loop.settings import Settings
from tests.fixtures.pipeline import WorkerProcess, make_traffic, reconcile, send_paced
from tests.fixtures.scenario import assert_never_restarted


@pytest.mark.timeout(240)
def test_poison_records_among_valid_ones(
    worker: WorkerProcess,
    topics: Settings,
    redis_client: redis.Redis,
    fault_report: Callable[[str], None],
) -> None:
    # Every kind of bad record, many times over, spread among 3,000.
    values, reasons = make_traffic(3_000, len(MALFORMED) * 20, seed=17)
    asyncio.run(send_paced(topics, values, per_second=500))
    outcome = reconcile(topics, values, reasons, timeout_s=180)
    assert_never_restarted(worker)
    outcome.assert_each_record_ended_once()
    poisoned = sum(value in reasons for value in values)
    fault_report(f"{poisoned} poison records dead-lettered, {outcome.duplicates} duplicates")
