"""Redis killed while events flow, and brought back on the same port: the worker holds its
batch, retries, and goes on by itself; every event ends as one verdict or dead letter."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from l2loop.infra.topics import ensure_topics
from tests.fixtures.faults import MakeService, RestartableService, fault_settings
from tests.fixtures.pipeline import make_traffic, reconcile, send_paced
from tests.fixtures.scenario import assert_never_restarted, start_worker, wait_for_log


async def _kill_mid_stream(
    send: asyncio.Task[None], redis: RestartableService, after_s: float, outage_s: float
) -> None:
    await asyncio.sleep(after_s)
    redis.kill()
    await asyncio.sleep(outage_s)
    # Forked from this thread: the server dies with the thread that started it.
    redis.process.start()
    await asyncio.to_thread(redis.process.wait_until_ready)
    await send


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("outage_s", "rate", "total"), [(10, 200, 4_000), (60, 100, 2_000)])
def test_redis_killed_mid_stream_and_restarted(
    outage_s: int,
    rate: int,
    total: int,
    own_redis: MakeService,
    service_endpoints: tuple[str, str],
    tmp_path: Path,
    fault_report: Callable[[str], None],
) -> None:
    redis = own_redis()
    redis.start()
    settings = fault_settings(
        service_endpoints[0], f"redis://127.0.0.1:{redis.port}/0", tmp_path / "var"
    )
    asyncio.run(ensure_topics(settings))
    values, reasons = make_traffic(total, total // 20, seed=outage_s)
    worker = start_worker(settings, tmp_path)
    try:
        # The outage must meet a running agent, not one still starting (that is the
        # start-up test's case).
        wait_for_log(worker, "event=score_agent_started")

        async def scenario() -> None:
            send = asyncio.create_task(send_paced(settings, values, per_second=rate))
            await _kill_mid_stream(send, redis, after_s=4.0, outage_s=outage_s)

        asyncio.run(scenario())
        outcome = reconcile(settings, values, reasons, timeout_s=180)
        log = worker.log()
        assert_never_restarted(worker)
        outcome.assert_each_record_ended_once()
        # The outage was met and waited out, not missed.
        assert "event=dependency_unavailable dependency=redis" in log
        assert "event=dependency_recovered dependency=redis" in log
        attempts = log.count("event=dependency_unavailable")
        fault_report(
            f"{total} records, Redis down {outage_s}s: 0 lost, {outcome.duplicates} duplicates, "
            f"{attempts} retries logged"
        )
    finally:
        worker.stop()


@pytest.mark.timeout(120)
def test_an_outage_shows_on_health_and_sigterm_still_stops_the_worker(
    own_redis: MakeService, service_endpoints: tuple[str, str], tmp_path: Path
) -> None:
    redis = own_redis()
    redis.start()
    settings = fault_settings(
        service_endpoints[0], f"redis://127.0.0.1:{redis.port}/0", tmp_path / "var"
    )
    asyncio.run(ensure_topics(settings))
    values, _ = make_traffic(400, 0, seed=3)
    worker = start_worker(settings, tmp_path)
    wait_for_log(worker, "event=score_agent_started")
    redis.kill()
    asyncio.run(send_paced(settings, values, per_second=200))
    wait_for_log(worker, "event=dependency_unavailable")
    # The outage is visible from outside: /health says degraded, /metrics says Redis is down.
    web = f"http://127.0.0.1:{settings.web_port}"
    health = httpx.get(f"{web}/health", timeout=5).json()
    assert health["status"] == "degraded"
    (redis_state,) = [d for d in health["dependencies"] if d["dependency"] == "redis"]
    assert redis_state["up"] is False and redis_state["attempts"] >= 1
    assert 'l2loop_dependency_up{dependency="redis"} 0.0' in httpx.get(f"{web}/metrics").text
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    # Within the worker's shutdown bound (5 s here) plus start-up slack, not "eventually".
    assert worker.process.wait(timeout=30) is not None
