"""The canary job's schedule and probes, with a fake clock and a recording sender."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson

from l2loop.schemas.events import ScanEvent
from l2loop.settings import Settings
from l2loop.streams.scoring import RawRecord, decode_scan_event
from l2loop.workers.canary import CANARY_EVENT_PREFIX, CanaryJob, ProbeCycle
from l2model.golden import load_golden


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, topic: str, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _settings(**changes: Any) -> Settings:
    return Settings(kafka_broker="localhost:1", redis_url="redis://localhost:1/0", **changes)


def test_one_pass_sends_every_probe_once_then_reshuffles() -> None:
    probes = load_golden().probes
    cycle = ProbeCycle(probes, seed="s")
    first, second = cycle.take(len(probes)), cycle.take(len(probes))
    assert Counter(p.probe_id for p in first) == Counter(p.probe_id for p in probes)
    assert Counter(p.probe_id for p in second) == Counter(p.probe_id for p in probes)
    assert [p.probe_id for p in first] != [p.probe_id for p in second]


def test_the_schedule_follows_the_rate_and_caps_a_stall() -> None:
    clock = Clock()
    job = CanaryJob(
        _settings(canary_probes_per_min=120, canary_tick_s=1.0), Recorder(), clock=clock
    )
    sent = []
    for _ in range(30):
        sent.append(asyncio.run(job.tick()))
        clock.now += 1.0
    # 2 per second after the first probe at t=0.
    assert sum(sent) == 1 + 29 * 2
    clock.now += 3600.0
    # An hour's stall is not made up in one burst: at most ten ticks' worth.
    assert asyncio.run(job.tick()) == 20
    clock.now += 1.0
    assert asyncio.run(job.tick()) == 2


def test_probes_carry_their_ground_truth_and_mark_themselves_canaries() -> None:
    settings = _settings(canary_probes_per_min=600, canary_tenant_id="the-canary")
    recorder, clock = Recorder(), Clock()
    job = CanaryJob(settings, recorder, clock=clock)
    golden = {p.probe_id: p for p in load_golden().probes}
    for _ in range(200):
        asyncio.run(job.tick())
        clock.now += 1.0
    assert job.sent == len(recorder.sent) > 1000
    ids = set()
    for offset, (topic, key, value) in enumerate(recorder.sent):
        assert topic == settings.topic("scan-events")
        # Decoded exactly as the score agent decodes it.
        event = decode_scan_event(RawRecord(topic, 0, offset, key, value))
        assert isinstance(event, ScanEvent)
        assert key == event.event_id.encode() and event.event_id.startswith(CANARY_EVENT_PREFIX)
        probe = golden[str(event.metadata["probe_id"])]
        assert event.text == probe.text and event.tenant_id == "the-canary"
        assert event.ground_truth is not None
        assert (event.ground_truth.label, event.ground_truth.family) == (probe.label, probe.family)
        assert event.ground_truth.source == "canary"
        ids.add(event.event_id)
        assert orjson.loads(value)["metadata"]["golden_version"] == "v1"
    assert len(ids) == len(recorder.sent)
    labels = Counter(orjson.loads(v)["ground_truth"]["label"] for _, _, v in recorder.sent)
    assert labels[0] > 0 and labels[1] > 0


def test_a_restarted_job_never_repeats_an_event_id() -> None:
    settings = _settings()
    first, second = Recorder(), Recorder()
    asyncio.run(CanaryJob(settings, first, clock=Clock()).tick())
    asyncio.run(CanaryJob(settings, second, clock=Clock()).tick())
    assert first.sent[0][1] != second.sent[0][1]
