"""Canary probes, and the demo spike's hurried rollout, through the real broker, Redis and
score agent (which drives the rollout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from l2loop.demo.spike import run_spike
from l2loop.infra.clients import tail_records
from l2loop.infra.topics import SCAN_VERDICTS
from l2loop.schemas.rollout import Rollout
from l2loop.settings import Settings
from l2loop.stores.rollout import RolloutStore
from l2loop.stores.verdicts import connected
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


async def _rolled_back(settings: Settings) -> Rollout:
    """The spike's rollout once the score worker's analysis has ended it."""
    async with connected(settings.redis_dsn) as client:
        store = RolloutStore(client, key_prefix=settings.topic_prefix)
        for _ in range(600):
            rollout = await store.get()
            if rollout is not None and not rollout.active and rollout.settled:
                return rollout
            await asyncio.sleep(0.2)
    raise AssertionError(f"the spike's rollout did not end: {rollout}")


def test_the_spike_is_rolled_out_to_a_canary_stage_and_rolled_back_by_the_analysis(
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

    async def scenario() -> tuple[Rollout, str | None]:
        stop_canary, stop_spike = asyncio.Event(), asyncio.Event()
        canary = asyncio.create_task(run_canary(settings, stop_canary))
        reading = asyncio.create_task(log.follow(settings))
        await log.until(lambda: count(base.version) >= 50)
        spike = asyncio.create_task(run_spike(settings, stop_spike, at_s=0.0, for_s=600.0))
        # The worker that scores drives the rollout: nothing else decides here.
        rollout = await _rolled_back(settings)
        stop_spike.set()
        await spike

        def last_spike_verdict() -> float:
            return max(
                _epoch(v["scored_at"]) for v in log.seen if v["model_version"] == spike_version
            )

        # Once rolled back, the base model makes every verdict again: the split ends at the
        # worker's next look at the state, and no spike verdict follows.
        await log.until(lambda: count(base.version, after=last_spike_verdict()) >= 100)
        stop_canary.set()
        await canary
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        async with connected(settings.redis_dsn) as client:
            current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
        return rollout, None if current is None else current.version

    rollout, current = asyncio.run(scenario())
    verdicts = log.seen
    # Caught at its first stage, by what the canaries measured (half of them go to the
    # candidate before 100); only canaries flow here, so it decided no user's event.
    assert rollout.candidate.version == spike_version and rollout.stages == ["10", "50", "100"]
    assert (rollout.status, rollout.stage) == ("rolled_back", "10")
    # The stage's canary FP rate against the incumbent's, or the window's FP alert for the
    # spike's version, whichever has its samples first.
    assert rollout.reason is not None, rollout
    assert "canary_fp_rate" in rollout.reason or "fp_rate_spike" in rollout.reason, rollout.reason
    assert rollout.candidate_share == 0.0
    # The pointer never named the spike: the model in service is the base, registered by
    # the rollout as its incumbent.
    assert current == base.version == rollout.incumbent.version

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
