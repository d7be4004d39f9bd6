"""An error nobody foresaw: the worker exits non-zero with one line, for its supervisor to
restart it — never a live process that no longer scores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from l2loop.infra.topics import ensure_topics
from l2loop.resilience import EXIT_CRASHED
from tests.fixtures.faults import MakeService, fault_settings
from tests.fixtures.pipeline import make_traffic, send_paced
from tests.fixtures.scenario import start_worker


@pytest.mark.timeout(180)
def test_an_unexpected_redis_error_ends_the_worker_with_one_line(
    own_redis: MakeService, service_endpoints: tuple[str, str], tmp_path: Path
) -> None:
    server = own_redis()
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    # The score agent alone: with every role, whichever agent writes first meets the error.
    settings = fault_settings(service_endpoints[0], url, tmp_path / "var").model_copy(
        update={"worker_roles": "score"}
    )
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings, tmp_path)
    # Out of memory with no eviction: writes are refused with an error that is not an
    # outage, so retrying would not help.
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory", 1)
    client.config_set("maxmemory-policy", "noeviction")
    client.close()
    values, _ = make_traffic(300, 0, seed=9)
    asyncio.run(send_paced(settings, values, per_second=300))
    assert worker.process is not None
    assert worker.process.wait(timeout=120) == EXIT_CRASHED
    crashes = [line for line in worker.log().splitlines() if "event=agent_crashed" in line]
    assert len(crashes) == 1, worker.log()[-3000:]
    assert "agent=score" in crashes[0] and "maxmemory" in crashes[0]
