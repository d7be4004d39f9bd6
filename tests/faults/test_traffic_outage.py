"""The counterfactual gate's traffic sample when the broker is away: the retraining waits
for it, and reads it once the broker answers, rather than judging a candidate on nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from l2loop.resilience import HEALTH
from l2loop.workers.traffic_sample import TrafficSample, sample_recent_traffic
from tests.fixtures.faults import MakeService, fault_settings


def _outage_seen(dependency: str) -> bool:
    return any(d.dependency == dependency and not d.up for d in HEALTH.report().dependencies)


@pytest.mark.timeout(180)
def test_the_traffic_sample_waits_for_a_broker_that_is_down(
    own_broker: MakeService,
    service_endpoints: tuple[str, str],
    tmp_path: Path,
    fault_report: Callable[[str], None],
) -> None:
    broker = own_broker()  # made, not started
    settings = fault_settings(f"127.0.0.1:{broker.port}", service_endpoints[1], tmp_path / "var")
    found: list[TrafficSample] = []
    reader = threading.Thread(
        target=lambda: found.append(asyncio.run(sample_recent_traffic(settings))), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 60
    while not _outage_seen("kafka") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _outage_seen("kafka"), "the reader never met the outage"
    time.sleep(3)
    assert reader.is_alive() and not found  # still waiting, not judged on an empty sample
    broker.start()
    reader.join(timeout=120)
    assert not reader.is_alive() and len(found) == 1
    (sample,) = found
    # A fresh broker holds no scan-events yet: read to the end, and said so.
    assert sample.stats.complete and sample.events == []
    assert not _outage_seen("kafka")
    fault_report("traffic sample: waited out a broker outage, then read to the end")
