# Over 500 lines on purpose: a benchmark reads top to bottom, the setup beside what it measures.
"""How soon ``fp_rate_spike`` fires after an FP spike's onset, and whether the window agent
keeps up with the score agent: one real ``l2loop worker`` (score agent, window agent and alert
evaluator in one process, the default deployment) or two (``--split-roles``), the real broker
and Redis, same run.

    python bench/window_alert_latency.py [--stable-hours 2] [--labelled-per-hour 3600]
        [--production-per-hour 2400] [--spike-labelled 1000] [--late-left 100] [--rate 200]
        [--split-roles]

``--split-roles`` runs parts 1 to 3 with two workers instead of one: the window agent and the
alert evaluator in one (``L2LOOP_WORKER_ROLES=windows,alerts,curated``: the curated sink too,
as it reads a topic the window agent reads, see SPLIT_ROLES), the score and report agents in
the other (``score,reports``), on the same topics, Redis and app id (one consumer group).
Either worker exiting ends the run. Part 4 is skipped: it measures the same with either
layout.

Event time is compressed: each hour of event time holds ``--labelled-per-hour`` canary probes
(golden-set prompts with ``ground_truth``; 3,600 is the default canary rate of 60 a minute)
and ``--production-per-hour`` unlabelled demo prompts, evenly spaced. The spike is the demo's
(l2loop/demo/spike.py): the model in service re-versioned at ``L2LOOP_SPIKE_THRESHOLD`` (0.01),
registered and promoted through the registry pointer the worker follows, so its verdicts carry
their own model version and benign probes get flagged (about 23 % of the golden set's benign
probes at 0.01, against 0.1 % for the model in service). Nothing is faked downstream: the
verdicts, windows and alerts are the worker's.

1. Throughput: ``--stable-hours`` of traffic are sent as one backlog to a fresh worker. The
   score agent's rate is its verdicts/s from the first to the last verdict. The window agent
   reads those verdicts as they come; its progress is read from its per-partition marks in
   Redis (the last applied offset, written with every apply), polled every 50 ms. Printed:
   when it first applied, its rate while it caught up (with the score agent running beside
   it), the most verdicts it was behind once caught up, and when it was done.
2. Spike at the start of a window: the spike model is promoted (the switch is confirmed by
   unlabelled probe events before any spike traffic is sent), then the next hour's traffic is
   sent from its first second at ``--rate`` events/s.
3. Spike late in a window: the following hour is sent up to ``--late-left`` labelled events
   before its end under the model in service, then the spike model takes over as in 2 and the
   traffic runs on into the next hour. A model version's window starts empty, so the spike's
   first window holds only what is left of its hour and may stay under
   ``L2LOOP_ALERT_MIN_SAMPLES``; the alert then comes from the next window.
4. The window agent alone: every verdict of the run copied, as it is, to a fresh topic set
   and drained by a fresh worker whose score agent has nothing to do (the alert evaluator
   runs beside it, on the windows it emits): its capacity in verdicts/s, from its first
   apply to its last, to set beside the score agent's rate of 1.

For 2 and 3: labelled events from the onset to the firing (as held by the window revision the
alert was judged on); what the rule needs when the same verdicts are taken one by one in
event-time order (the window agent applies them in batches, interleaving four partitions, so
the two differ by a batch either way); wall time from the onset's first event to
the alert, and from the event that completed the evidence to the alert (the pipeline's own
delay).

Last, computed rather than measured: a spike inside one model version (the traffic changes,
not the model; seen through analyst labels, say) shares its window with the stable traffic
before it, so where in the window it starts matters. For onsets 0, 15, 30 and 45 minutes into
a window, the labelled events ``fp_rate_spike`` needs, from expected counts at the FP rates
this run measured, judged by the rule's own code.

Uses L2LOOP_KAFKA_BROKER / L2LOOP_REDIS_URL when set, else embedded services.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from scoring_throughput import fresh, send_keyed

from l2loop.demo.spike import register_spike_model
from l2loop.demo.traffic import demo_prompts
from l2loop.infra.embedded import ManagedProcess, free_port
from l2loop.infra.processes import l2loop_process, running
from l2loop.infra.services import serving_settings
from l2loop.infra.topics import ALERTS, SCAN_EVENTS, SCAN_VERDICTS, WINDOW_STATS, ensure_topics
from l2loop.logs import configure
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.windows import Alert, WindowStats
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connect
from l2loop.streams.alert_rules import Thresholds, fp_rate_spike
from l2loop.streams.transport import FETCH_MAX_WAIT_MS
from l2loop.streams.window_state import (
    FP,
    GT_BENIGN,
    SourcePartition,
    WindowConfig,
    WindowCounts,
    epoch_ms,
)
from l2loop.streams.window_store import RedisWindowState
from l2loop.streams.windows import render
from l2loop.workers.canary import ProbeCycle, canary_event
from l2model.contract import Manifest
from l2model.golden import load_golden
from l2model.registry import ModelPointer, ModelRegistry

HOUR = timedelta(hours=1)
PROBE_TENANT = "bench-probe"
# --split-roles: the window agent and the alert evaluator in a worker of their own. Both
# workers share the app id, so one consumer group, and Faust's assignor shares each topic's
# partitions among the members whose agents read it: a topic read by agents in both workers
# would be split between them, each agent seeing only its part. The window agent reads
# curated-examples (analyst labels) as the curated sink does, so the sink runs beside it.
SPLIT_ROLES = ("score,reports", "windows,alerts,curated")


def worker_processes(settings: Settings, split: bool, log_dir: Path) -> list[ManagedProcess]:
    """One ``l2loop worker`` with every role, or (``split``) one per entry of SPLIT_ROLES."""
    if not split:
        log_path = log_dir / "bench-windows-worker.log"
        return [l2loop_process(settings, "worker", ("worker",), settings.web_port, log_path)]
    out = []
    for roles in SPLIT_ROLES:
        own = settings.model_copy(update={"worker_roles": roles, "web_port": free_port()})
        log_path = log_dir / f"bench-windows-worker-{roles.replace(',', '-')}.log"
        out.append(l2loop_process(own, f"worker ({roles})", ("worker",), own.web_port, log_path))
    return out


@contextmanager
def all_running(processes: Sequence[ManagedProcess]) -> Iterator[list[subprocess.Popen[bytes]]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running(p)) for p in processes]


def check_alive(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is not None:
            raise RuntimeError(f"a worker exited with code {worker.returncode}")


@dataclass(frozen=True)
class Slot:
    """One event of the layout: its event time, id, bytes, and its label (None: production)."""

    ts: datetime
    event_id: str
    value: bytes
    label: int | None


class Layout:
    """Evenly spaced events per hour of event time; labelled ones spread among production."""

    def __init__(self, t0: datetime, labelled: int, production: int, settings: Settings) -> None:
        self.t0, self.labelled, self.production = t0, labelled, production
        self.per_hour = labelled + production
        self._settings = settings
        self._probes = ProbeCycle(load_golden(settings.golden_version).probes, seed="bench")
        self._prompts = [p.text for p in demo_prompts(2_000, seed=7)]

    def is_labelled(self, slot: int) -> bool:
        # Slot i is labelled when it crosses the next multiple of per_hour / labelled.
        return (slot + 1) * self.labelled // self.per_hour > slot * self.labelled // self.per_hour

    def hour_start(self, hour: int) -> datetime:
        return self.t0 + hour * HOUR

    def slot_of_labelled_left(self, left: int) -> int:
        """The first slot of an hour after which ``left`` labelled slots remain."""
        remaining = 0
        for slot in range(self.per_hour - 1, -1, -1):
            remaining += self.is_labelled(slot)
            if remaining == left:
                return slot
        return 0

    def events(self, hour: int, first: int, last: int) -> list[Slot]:
        """Slots ``first`` up to (not including) ``last`` of ``hour``."""
        step = HOUR / self.per_hour
        out = []
        for slot in range(first, min(last, self.per_hour)):
            ts = self.hour_start(hour) + step * slot
            event_id = f"h{hour:03d}-{slot:05d}"
            if self.is_labelled(slot):
                probe = self._probes.take(1)[0]
                event = canary_event(
                    probe,
                    event_id=f"canary-{event_id}",
                    tenant_id=self._settings.canary_tenant_id,
                    golden_version=self._settings.golden_version,
                    now=ts,
                )
                out.append(Slot(ts, event.event_id, to_bytes(event), probe.label))
            else:
                text = self._prompts[(hour * self.per_hour + slot) % len(self._prompts)]
                payload = {"event_id": event_id, "ts": ts.isoformat(), "tenant_id": "bench"}
                out.append(Slot(ts, event_id, orjson.dumps(payload | {"text": text}), None))
        return out

    def labelled_run(self, hour: int, first: int, labelled: int) -> list[Slot]:
        """From slot ``first`` of ``hour`` on, across hours, until ``labelled`` are included."""
        out: list[Slot] = []
        count = 0
        while count < labelled:
            for slot in self.events(hour, first, self.per_hour):
                out.append(slot)
                count += slot.label is not None
                if count >= labelled:
                    break
            hour, first = hour + 1, 0
        return out


@dataclass
class Seen:
    arrived: float
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    payload: dict[str, object]


@dataclass
class Collector:
    """Everything the workers write to one topic, with arrival times, as it happens."""

    settings: Settings
    topic: str
    workers: Sequence[subprocess.Popen[bytes]]
    seen: list[Seen] = field(default_factory=list)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topic(self.topic),
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        try:
            while True:
                check_alive(self.workers)
                batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
                now = time.time()
                for records in batches.values():
                    for r in records:
                        payload = orjson.loads(r.value)
                        self.seen.append(Seen(now, r.partition, r.offset, r.key, r.value, payload))
        finally:
            await consumer.stop()


async def wait_for(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class WindowProgress:
    """The window agent's applied offsets on scan-verdicts, sampled every 50 ms."""

    settings: Settings
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def run(self) -> None:
        client = connect(self.settings.redis_dsn)
        state = RedisWindowState(
            client, key_prefix=self.settings.topic_prefix, window_ttl_s=60, dedupe_ttl_s=60
        )
        sources = [
            SourcePartition(self.settings.topic(SCAN_VERDICTS), p)
            for p in range(self.settings.partitions)
        ]
        try:
            while True:
                marks = await state.marks(sources)
                self.samples.append((time.time(), sum(m.offset + 1 for m in marks.values())))
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def applied(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def rate(self, upto: int) -> tuple[float, float]:
        """(verdicts/s from the first advance to reaching ``upto``, when it reached it)."""
        first = next((t, n) for t, n in self.samples if n > 0)
        done = next(t for t, n in self.samples if n >= upto)
        return (upto - first[1]) / max(done - first[0], 1e-9), done


async def send(settings: Settings, slots: Sequence[Slot], rate: float | None) -> dict[str, float]:
    """Sends keyed by event id, paced at ``rate``/s; returns send times."""
    records = [(slot.event_id, slot.event_id.encode(), slot.value) for slot in slots]
    return await send_keyed(settings, settings.topic(SCAN_EVENTS), records, rate)


@dataclass
class Pipeline:
    settings: Settings
    layout: Layout
    verdicts: Collector
    alerts: Collector
    pointer: ModelPointer
    registry: ModelRegistry
    spike_version: str
    sent: dict[str, float] = field(default_factory=dict)
    probes: int = 0

    async def send(self, slots: Sequence[Slot], rate: float | None) -> None:
        self.sent |= await send(self.settings, slots, rate)

    async def scored(self, slots: Sequence[Slot], timeout_s: float = 600) -> None:
        wanted = {s.event_id for s in slots}
        await wait_for(
            f"{len(wanted)} verdicts",
            lambda: wanted <= {str(v.payload["event_id"]) for v in self.verdicts.seen},
            timeout_s,
        )

    async def switch_to(self, version: str, ts: datetime) -> None:
        """Points the registry at ``version`` and waits until the worker scores with it:
        unlabelled probes (their own tenant) are sent until one's verdict names it."""
        if version == self.spike_version:
            await self.pointer.promote(self.registry, version)
        else:
            await self.pointer.rollback()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.probes += 1
            probe_id = f"probe-{self.probes}"
            payload = {"event_id": probe_id, "ts": ts.isoformat(), "tenant_id": PROBE_TENANT}
            probe = Slot(ts, probe_id, orjson.dumps(payload | {"text": "hi"}), None)
            await send(self.settings, [probe], None)
            verdict = await self.verdict_of(probe_id, 30)
            if verdict is not None and verdict.payload["model_version"] == version:
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"the worker did not switch to {version}")

    async def verdict_of(self, event_id: str, timeout_s: float) -> Seen | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for seen in self.verdicts.seen:
                if seen.payload["event_id"] == event_id:
                    return seen
            await asyncio.sleep(0.05)
        return None

    def firing(self, since: datetime) -> Alert | None:
        for record in self.alerts.seen:
            alert = Alert.model_validate(record.payload)
            if (
                alert.rule == "fp_rate_spike"
                and alert.status == "firing"
                and alert.model_version == self.spike_version
                and alert.window_start >= since
            ):
                return alert
        return None


@dataclass
class SpikeFigures:
    onset: str
    labelled_at_alert: int
    in_order: int
    benign_samples: int
    wall_from_onset_s: float
    wall_from_evidence_s: float
    event_time_min: float
    alert_window: str


def in_order(
    spike: Sequence[Slot], flagged: dict[str, bool], config: WindowConfig, limits: Thresholds
) -> tuple[int, str]:
    """The labelled events from the onset after which the rule first reads 'crossed', judged
    event by event in event-time order (window by window, as the window agent counts)."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for index, slot in enumerate(s for s in spike if s.label is not None):
        start = config.start_of(epoch_ms(slot.ts))
        if slot.label == 0:
            counts[start][0] += 1
            counts[start][1] += int(flagged[slot.event_id])
        benign, fp = counts[start]
        window = render(WindowCounts(start, "spike", 1, {GT_BENIGN: benign, FP: fp}, {}), config)
        if fp_rate_spike(window, limits).reading == "crossed":
            return index + 1, slot.event_id
    raise RuntimeError("the spike never crosses the rule")


async def window_revisions(settings: Settings) -> list[WindowStats]:
    consumer = AIOKafkaConsumer(
        settings.topic(WINDOW_STATS),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out = []
    try:
        while batches := await consumer.getmany(timeout_ms=2000, max_records=10_000):
            for records in batches.values():
                out += [WindowStats.model_validate_json(r.value) for r in records]
    finally:
        await consumer.stop()
    return out


async def spike_figures(
    p: Pipeline, spike: Sequence[Slot], onset_wall: float, alert: Alert
) -> SpikeFigures:
    config = WindowConfig.from_settings(p.settings)
    limits = Thresholds.from_settings(p.settings)
    flagged = {
        str(v.payload["event_id"]): bool(v.payload["is_threat"])
        and v.payload["model_version"] == p.spike_version
        for v in p.verdicts.seen
    }
    needed, evidence_id = in_order(spike, flagged, config, limits)
    revisions = [
        w for w in await window_revisions(p.settings) if w.model_version == p.spike_version
    ]
    onset_ts = spike[0].ts
    # The revision the alert was judged on: the one holding its benign samples (of several
    # such, the one with the most labelled events, to err on the slow side).
    judged = max(
        (
            w
            for w in revisions
            if w.window_start == alert.window_start and w.canary_fp_rate.total == alert.samples
        ),
        key=lambda w: w.recall.total,
    )
    # Windows of the spike before the alert's: complete by then (event-time order).
    earlier: dict[datetime, WindowStats] = {}
    first, alerting = config.start_of(epoch_ms(onset_ts)), epoch_ms(alert.window_start)
    for w in revisions:
        start = epoch_ms(w.window_start)
        newer = w.window_start not in earlier or earlier[w.window_start].revision < w.revision
        if first <= start < alerting and newer:
            earlier[w.window_start] = w
    labelled = sum(w.canary_fp_rate.total + w.recall.total for w in [*earlier.values(), judged])
    fired = alert.starts_at.timestamp()
    into = onset_ts - p.layout.hour_start(int((onset_ts - p.layout.t0) / HOUR))
    return SpikeFigures(
        onset=f"{into.total_seconds() / 60:.1f} min into its window",
        labelled_at_alert=labelled,
        in_order=needed,
        benign_samples=alert.samples,
        wall_from_onset_s=fired - onset_wall,
        wall_from_evidence_s=fired - p.sent[evidence_id],
        event_time_min=(next(s.ts for s in spike if s.event_id == evidence_id) - onset_ts)
        / timedelta(minutes=1),
        alert_window=alert.window_start.strftime("%H:%M") + f" (+{len(earlier)} earlier)",
    )


async def run_spike(p: Pipeline, spike: Sequence[Slot], rate: float) -> SpikeFigures | str:
    """The figures of one spike, or why there are none."""
    await p.switch_to(p.spike_version, spike[0].ts)
    since = p.layout.hour_start(int((spike[0].ts - p.layout.t0) / HOUR))
    onset_wall = time.time()
    await p.send(spike, rate)
    await p.scored(spike)
    try:
        await wait_for("the alert", lambda: p.firing(since) is not None, 60)
    except RuntimeError:
        labelled = sum(s.label is not None for s in spike)
        return f"no alert within the spike's {labelled} labelled events and 60 s after"
    alert = p.firing(since)
    assert alert is not None
    return await spike_figures(p, spike, onset_wall, alert)


@dataclass
class Throughput:
    verdicts: int
    score_per_s: float
    first_apply_s: float  # the window agent's first apply, after the first verdict
    most_behind: int  # from the first verdict on: the most verdicts it was behind
    # Its rate while it had a backlog, the score agent running beside; None when it had
    # none (at its first apply no further behind than it stayed once caught up).
    catch_up_per_s: float | None
    caught_up_s: float  # when it first had applied every verdict delivered so far
    scoring_s: float  # when the score agent's last verdict came
    steady_lag: int  # once caught up: the most verdicts it was behind the score agent
    done_after_s: float  # how long after the last verdict it had applied everything


def keeping_up(
    arrivals: Sequence[float], samples: Sequence[tuple[float, int]], total: int, score_rate: float
) -> Throughput:
    """The window agent's progress against the verdicts' arrivals (both in this process's
    clock)."""

    def delivered(t: float) -> int:
        return bisect.bisect_right(arrivals, t)

    started = next((t, n) for t, n in samples if n > 0)
    caught = next((t, n) for t, n in samples if t > started[0] and n >= delivered(t))
    done = next(t for t, n in samples if n >= total)
    steady = [delivered(t) - n for t, n in samples if caught[0] <= t <= done]
    behind = [delivered(t) - n for t, n in samples if arrivals[0] <= t <= done]
    steady_lag = max(steady, default=0)
    backlog = delivered(started[0]) - started[1] > steady_lag
    return Throughput(
        verdicts=total,
        score_per_s=score_rate,
        first_apply_s=started[0] - arrivals[0],
        most_behind=max(behind, default=0),
        catch_up_per_s=(caught[1] - started[1]) / max(caught[0] - started[0], 1e-9)
        if backlog
        else None,
        caught_up_s=caught[0] - arrivals[0],
        scoring_s=arrivals[-1] - arrivals[0],
        steady_lag=steady_lag,
        done_after_s=done - arrivals[-1],
    )


async def pipeline_run(
    settings: Settings, workers: Sequence[subprocess.Popen[bytes]], args: argparse.Namespace
) -> tuple[Throughput, list[SpikeFigures | str], list[Seen]]:
    t0 = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - 24 * HOUR
    layout = Layout(t0, args.labelled_per_hour, args.production_per_hour, settings)
    verdicts = Collector(settings, SCAN_VERDICTS, workers)
    alerts = Collector(settings, ALERTS, workers)
    progress = WindowProgress(settings)
    client = connect(settings.redis_dsn)
    registry = model_registry(settings)
    pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
    p = Pipeline(
        settings, layout, verdicts, alerts, pointer, registry, settings.spike_model_version
    )
    tasks = [asyncio.create_task(c.run()) for c in (verdicts, alerts, progress)]
    try:
        # 1. Stable hours as one backlog.
        stable = [s for h in range(args.stable_hours) for s in layout.events(h, 0, layout.per_hour)]
        await p.send(stable, None)
        await p.scored(stable)
        arrivals = [v.arrived for v in verdicts.seen]
        score_rate = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)
        await wait_for("the window agent", lambda: progress.applied() >= len(stable), 300)
        throughput = keeping_up(arrivals, progress.samples, len(stable), score_rate)
        # 2. Spike at the start of the next hour's window.
        figures: list[SpikeFigures | str] = []
        hour = args.stable_hours
        base = (await pointer.current() or Manifest.read(settings.model_dir)).version
        figures.append(
            await run_spike(p, layout.labelled_run(hour, 0, args.spike_labelled), args.rate)
        )
        # 3. The hour after: the model in service until --late-left labelled events remain.
        hour += 1
        await p.switch_to(base, layout.hour_start(hour))
        onset_slot = layout.slot_of_labelled_left(args.late_left)
        before = layout.events(hour, 0, onset_slot)
        await p.send(before, None)
        await p.scored(before)
        figures.append(
            await run_spike(
                p, layout.labelled_run(hour, onset_slot, args.spike_labelled), args.rate
            )
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    return throughput, figures, verdicts.seen


async def window_agent_alone(
    settings: Settings, workers: Sequence[subprocess.Popen[bytes]], verdicts: Sequence[Seen]
) -> float:
    """Copies the run's verdicts to this topic set, partition for partition; verdicts/s."""
    progress = WindowProgress(settings)
    task = asyncio.create_task(progress.run())
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        topic = settings.topic(SCAN_VERDICTS)
        pending = [
            await producer.send(topic, v.value, key=v.key, partition=v.partition) for v in verdicts
        ]
        await asyncio.gather(*pending)
        deadline = time.monotonic() + 600
        while progress.applied() < len(verdicts):
            check_alive(workers)
            if time.monotonic() > deadline:
                raise RuntimeError("the window agent did not drain the copied verdicts")
            await asyncio.sleep(0.1)
        return progress.rate(len(verdicts))[0]
    finally:
        await producer.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass(frozen=True)
class Rates:
    stable: float  # benign labelled events flagged by the model in service
    spike: float  # ... by the spike model
    benign_share: float


def observed_rates(verdicts: Sequence[Seen], spike_version: str) -> Rates:
    counts: dict[tuple[bool, int], list[int]] = defaultdict(lambda: [0, 0])
    for v in verdicts:
        truth = v.payload.get("ground_truth")
        if isinstance(truth, dict):
            cell = counts[(v.payload["model_version"] == spike_version, int(truth["label"]))]
            cell[0] += 1
            cell[1] += bool(v.payload["is_threat"])
    benign = counts[(False, 0)][0] + counts[(True, 0)][0]
    labelled = benign + counts[(False, 1)][0] + counts[(True, 1)][0]
    return Rates(
        stable=counts[(False, 0)][1] / max(1, counts[(False, 0)][0]),
        spike=counts[(True, 0)][1] / max(1, counts[(True, 0)][0]),
        benign_share=benign / max(1, labelled),
    )


def same_version_table(rates: Rates, settings: Settings, per_hour: int) -> list[tuple[int, str]]:
    """Labelled events a spike needs to fire when it shares its window and model version with
    ``before`` labelled events of stable traffic (expected counts, judged by fp_rate_spike):
    a spike of the traffic rather than of the model, seen through analyst labels, say."""
    config = WindowConfig.from_settings(settings)
    limits = Thresholds.from_settings(settings)
    rows = []
    for before in (0, per_hour // 4, per_hour // 2, 3 * per_hour // 4):
        benign0 = before * rates.benign_share
        needed = "not this window"
        for after in range(1, per_hour - before + 1):
            benign = benign0 + after * rates.benign_share
            fp = benign0 * rates.stable + after * rates.benign_share * rates.spike
            counts = {GT_BENIGN: round(benign), FP: round(fp)}
            window = render(WindowCounts(0, "one", 1, counts, {}), config)
            if fp_rate_spike(window, limits).reading == "crossed":
                needed = str(after)
                break
        rows.append((before, needed))
    return rows


async def registered(settings: Settings) -> Settings:
    """A registry of the run's own holding the model in service, promoted (so that the spike
    can roll back to it, as l2loop/demo/spike.py ensures), and the spike model."""
    settings = settings.model_copy(
        update={"registry_dir": settings.data_dir / f"registry-{settings.app_id}"}
    )
    registry = model_registry(settings)
    base = registry.add(settings.model_dir, changes=["model in service"])
    register_spike_model(
        registry,
        settings.model_dir,
        version=settings.spike_model_version,
        threshold=settings.spike_threshold,
    )
    client = connect(settings.redis_dsn)
    try:
        await ModelPointer(client, key_prefix=settings.topic_prefix).promote(registry, base.version)
    finally:
        await client.aclose()
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stable-hours", type=int, default=2)
    parser.add_argument("--labelled-per-hour", type=int, default=3600)
    parser.add_argument("--production-per-hour", type=int, default=2400)
    parser.add_argument("--spike-labelled", type=int, default=1000)
    parser.add_argument("--late-left", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="spike traffic, events/s")
    parser.add_argument(
        "--split-roles",
        action="store_true",
        help=f"two workers, roles {' and '.join(SPLIT_ROLES)}; skips the window agent alone",
    )
    args = parser.parse_args()
    configure("warn")
    base = Settings(data_dir=Path("var/bench"))
    with serving_settings(base) as live:
        settings = asyncio.run(registered(fresh(live, "windows")))
        asyncio.run(ensure_topics(settings))
        with all_running(worker_processes(settings, args.split_roles, live.data_dir)) as workers:
            throughput, spikes, verdicts = asyncio.run(pipeline_run(settings, workers, args))
        rates = observed_rates(verdicts, settings.spike_model_version)
        alone_rate = None
        if not args.split_roles:
            # Measures the same with either layout: the score agent has nothing to do.
            alone = fresh(live, "windows-alone")
            asyncio.run(ensure_topics(alone))
            with all_running(worker_processes(alone, False, live.data_dir)) as workers:
                alone_rate = asyncio.run(window_agent_alone(alone, workers, verdicts))
    print(
        f"layout: {args.labelled_per_hour} labelled + {args.production_per_hour} production "
        f"events per hour of event time; spike model = model in service at threshold "
        f"{settings.spike_threshold}, sent at {args.rate:.0f} events/s; alert rule "
        f"min samples {settings.alert_min_samples}, FP threshold {settings.alert_fp_rate}"
    )
    print(
        f"{'spike onset':<34}{'labelled':>10}{'ordered':>8}{'benign':>8}{'wall s':>9}"
        f"{'evid. s':>9}{'ev. min':>9}  alert window"
    )
    for s in spikes:
        if isinstance(s, str):
            print(s)
            continue
        print(
            f"{s.onset:<34}{s.labelled_at_alert:>10}{s.in_order:>8}{s.benign_samples:>8}"
            f"{s.wall_from_onset_s:>9.2f}{s.wall_from_evidence_s:>9.2f}"
            f"{s.event_time_min:>9.1f}  {s.alert_window}"
        )
    print("goal: the alert within 500 labelled events of the onset")
    print(
        "computed, not measured: one model version whose benign FP rate jumps from "
        f"{rates.stable:.2%} to {rates.spike:.2%} inside a window ({rates.benign_share:.0%} of "
        "labelled events benign), by the rule's own code"
    )
    print(f"{'labelled events before the onset':<34}{'labelled after':>16}")
    for before, after in same_version_table(rates, settings, args.labelled_per_hour):
        into = f"{before} ({60 * before / args.labelled_per_hour:.0f} min)"
        print(f"{into:<34}{after:>16}")
    catch_up = (
        "no backlog to catch up"
        if throughput.catch_up_per_s is None
        else f"catching up at {throughput.catch_up_per_s:.0f} verdicts/s"
    )
    who = f"workers with roles {' and '.join(SPLIT_ROLES)}" if args.split_roles else "one worker"
    print(
        f"backlog of {throughput.verdicts} events, {who}: score agent "
        f"{throughput.score_per_s:.0f} verdicts/s. Window agent: first apply "
        f"{throughput.first_apply_s:.1f} s after the first verdict, at most "
        f"{throughput.most_behind} verdicts behind from the first verdict on; {catch_up}, "
        f"level with the score agent at {throughput.caught_up_s:.1f} s "
        f"(the last verdict came at {throughput.scoring_s:.1f} s), at most "
        f"{throughput.steady_lag} verdicts behind after that; done "
        f"{throughput.done_after_s:.2f} s after the last verdict"
    )
    if alone_rate is not None:
        print(
            f"window agent alone over {len(verdicts)} copied verdicts: {alone_rate:.0f} verdicts/s"
        )


if __name__ == "__main__":
    main()
