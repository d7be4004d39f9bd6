"""Dependencies that are not there yet when a worker starts: it waits, then runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from l2loop.infra.topics import ensure_topics
from tests.fixtures.faults import MakeService, fault_settings
from tests.fixtures.pipeline import make_traffic, reconcile, send_paced
from tests.fixtures.scenario import assert_never_restarted, start_worker, wait_for_log


@pytest.mark.timeout(240)
def test_redis_down_when_the_worker_starts(
    own_redis: MakeService,
    service_endpoints: tuple[str, str],
    tmp_path: Path,
    fault_report: Callable[[str], None],
) -> None:
    redis = own_redis()  # made, not started
    settings = fault_settings(
        service_endpoints[0], f"redis://127.0.0.1:{redis.port}/0", tmp_path / "var"
    )
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings, tmp_path)
    try:
        wait_for_log(worker, "event=dependency_waiting dependency=redis")
        time.sleep(5)
        redis.start()
        values, reasons = make_traffic(1_000, 50, seed=5)
        asyncio.run(send_paced(settings, values, per_second=200))
        outcome = reconcile(settings, values, reasons, timeout_s=120)
        assert_never_restarted(worker)
        outcome.assert_each_record_ended_once()
        waits = worker.log().count("event=dependency_waiting dependency=redis")
        fault_report(f"waited {waits} attempts for Redis, then {outcome.duplicates} duplicates")
    finally:
        worker.stop()


@pytest.mark.timeout(240)
def test_broker_reachable_only_20_s_after_the_worker_starts(
    own_broker: MakeService,
    service_endpoints: tuple[str, str],
    tmp_path: Path,
    fault_report: Callable[[str], None],
) -> None:
    broker = own_broker()  # made, not started
    settings = fault_settings(f"127.0.0.1:{broker.port}", service_endpoints[1], tmp_path / "var")
    worker = start_worker(settings, tmp_path)
    try:
        wait_for_log(worker, "event=dependency_waiting dependency=kafka")
        time.sleep(20)
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        broker.start()
        wait_for_log(worker, "event=score_agent_started", timeout_s=120)
        asyncio.run(ensure_topics(settings))
        values, reasons = make_traffic(1_000, 50, seed=6)
        asyncio.run(send_paced(settings, values, per_second=200))
        outcome = reconcile(settings, values, reasons, timeout_s=120)
        assert_never_restarted(worker)
        outcome.assert_each_record_ended_once()
        waits = worker.log().count("event=dependency_waiting dependency=kafka")
        fault_report(
            f"waited {waits} attempts for the broker, then {outcome.duplicates} duplicates"
        )
    finally:
        worker.stop()
