"""Canary probes and the demo spike through the real broker, Redis and score agent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from l2loop.demo.spike import run_spike
from l2loop.infra.clients import tail_records
from l2loop.infra.topics import SCAN_VERDICTS
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2loop.workers.canary import CANARY_EVENT_PREFIX, run_canary
from l2model.artifacts import default_model_dir
from l2model.contract import Manifest
from l2model.golden import load_golden
from l2model.registry import ModelPointer
from tests.fixtures.pipeline import WorkerProcess

Verdict = dict[str, Any]


class VerdictLog:
    """scan-verdicts read from the start, as they arrive, for a scenario to wait on."""

    def __init__(self) -> None:
        self.seen: list[Verdict] = []
        self._arrived = asyncio.Event()

    async def follow(self, settings: Settings) -> None:
        topic = settings.topic(SCAN_VERDICTS)
        async for record in tail_records(settings, topic, from_beginning=True):
            self.seen.append(orjson.loads(record.value))
            self._arrived.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
        async def wait() -> None:
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(wait(), timeout_s)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_canary_probes_get_verdicts_carrying_their_ground_truth(
    topics: Settings, worker: WorkerProcess
) -> None:
    # The worker's canary tenant: only its ground truth is passed on (decision 0018).
    settings = topics.model_copy(update={"canary_probes_per_min": 1200.0, "canary_tick_s": 0.25})
    wanted = 120
    log = VerdictLog()

    async def scenario() -> int:
        stop = asyncio.Event()
        job = asyncio.create_task(run_canary(settings, stop))
        reading = asyncio.create_task(log.follow(settings))
        await log.until(lambda: len(log.seen) >= wanted)
        stop.set()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        return await job

    sent = asyncio.run(scenario())
    verdicts = log.seen
    golden = {p.probe_id: p for p in load_golden().probes}
    assert sent >= wanted
    assert len({v["event_id"] for v in verdicts}) == len(verdicts) >= wanted
    for verdict in verdicts:
        assert verdict["event_id"].startswith(CANARY_EVENT_PREFIX)
        assert verdict["tenant_id"] == topics.canary_tenant_id
        # canary-<run>-<sequence>-<probe id>, the probe id being g1-NNNNN
        probe = golden["-".join(verdict["event_id"].rsplit("-", 2)[-2:])]
        assert verdict["ground_truth"] == {
            "label": probe.label,
            "family": probe.family,
            "source": "canary",
        }
    # The job never runs ahead of its rate (it may fall behind on a slow machine).
    times = sorted(_epoch(v["ts"]) for v in verdicts)
    per_s = settings.canary_probes_per_min / 60.0
    assert times[-1] - times[0] >= (len(times) - 1) / per_s - 2 * settings.canary_tick_s


def test_the_spike_switches_the_scorer_to_the_twitchy_model_and_back(
    topics: Settings, worker: WorkerProcess
) -> None:
    settings = topics.model_copy(
        update={"canary_probes_per_min": 1200.0, "canary_tick_s": 0.25, "spike_threshold": 0.01}
    )
    base = Manifest.read(default_model_dir())
    spike_version = settings.spike_model_version
    log = VerdictLog()

    def count(version: str, after: float = 0.0) -> int:
        return sum(
            v["model_version"] == version and _epoch(v["scored_at"]) > after for v in log.seen
        )

    async def scenario() -> str | None:
        stop_canary, stop_spike = asyncio.Event(), asyncio.Event()
        canary = asyncio.create_task(run_canary(settings, stop_canary))
        reading = asyncio.create_task(log.follow(settings))
        await log.until(lambda: count(base.version) >= 50)
        spike = asyncio.create_task(run_spike(settings, stop_spike, at_s=0.0, for_s=600.0))
        await log.until(lambda: count(spike_version) >= 200)
        stop_spike.set()
        await spike
        ended = time.time()
        await log.until(lambda: count(base.version, after=ended) >= 50)
        stop_canary.set()
        await canary
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        client = connect(settings.redis_dsn)
        current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
        await client.aclose()
        return None if current is None else current.version

    current = asyncio.run(scenario())
    verdicts = log.seen
    assert current == base.version

    def benign_flagged(selected: list[Verdict]) -> tuple[int, int]:
        benign = [v for v in selected if v["ground_truth"]["label"] == 0]
        return sum(v["is_threat"] for v in benign), len(benign)

    spiked = [v for v in verdicts if v["model_version"] == spike_version]
    normal = [v for v in verdicts if v["model_version"] == base.version]
    assert {v["threshold"] for v in spiked} == {0.01}
    assert {v["threshold"] for v in normal} == {base.threshold}
    flagged, benign = benign_flagged(spiked)
    assert flagged / benign > 0.05
    normal_flagged, normal_benign = benign_flagged(normal)
    assert normal_flagged / normal_benign < flagged / benign
    # One switch there and one back, each between batches: ordered by scoring time, the
    # verdicts' versions run base, spike, base, never interleaved.
    runs = [v["model_version"] for v in sorted(verdicts, key=lambda v: _epoch(v["scored_at"]))]
    assert [version for i, version in enumerate(runs) if i == 0 or runs[i - 1] != version] == [
        base.version,
        spike_version,
        base.version,
    ]
