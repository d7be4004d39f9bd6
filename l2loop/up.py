"""``l2loop up``: embedded broker and Redis, a worker running every agent, the API, the
quarterly scheduler, demo traffic, canaries, simulated users who report, an optional FP
spike, and a live summary.

The demo runs short windows (``window_s``, a minute by default) so that a newcomer sees
windows close and alerts fire and resolve within minutes; the canary rate is raised so that
each window holds enough probes to alert on. A staged rollout (of the quarterly cycle's
candidate, or of the spike model) holds each stage for seconds, not an hour, so that its
stages move within a few minutes: the live line shows where it stands, and every transition
gets a line of its own."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import orjson

from l2loop.demo.reporters import SentPrompts, run_demo_reporters
from l2loop.demo.spike import run_spike
from l2loop.demo.traffic import Prompt, run_demo_traffic
from l2loop.infra.clients import topic_reader
from l2loop.infra.embedded import ManagedProcess, free_port
from l2loop.infra.processes import l2loop_process
from l2loop.infra.services import announce_up, redis_address, serving
from l2loop.infra.supervision import AfterRestart, CrashLoopRule, Supervised, Supervisor
from l2loop.infra.topics import ALERTS, SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS, ensure_topics
from l2loop.logs import get_logger
from l2loop.resilience import TRANSIENT_ERRORS
from l2loop.schemas.dead_letters import DeadLetter
from l2loop.schemas.decoding import RawRecord, decode_record
from l2loop.schemas.rollout import SHADOW, Rollout, StageRecord
from l2loop.schemas.windows import Alert, Rate, WindowStats, window_field
from l2loop.settings import Settings
from l2loop.stats import percentile
from l2loop.stores.alerts import AlertStore
from l2loop.stores.rollout import RolloutStore
from l2loop.stores.shared import shared_storage
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import connect
from l2loop.streams.defences.admission import ReportLedger
from l2loop.workers.canary import run_canary
from l2loop.workers.scheduler import CycleRecord, next_cycle_at
from l2model.evaluation import percent
from l2model.golden import load_golden
from l2model.private import open_private, private_dir

log = get_logger(__name__)

# The demo's window: short enough to watch windows close and alerts resolve.
DEMO_WINDOW_S = 60
# The demo's rollout: each stage held for half a minute and a few hundred events (production:
# an hour and a thousand), and split by event, since the demo's five tenants cannot be split
# 10/50 by tenant. Applied only where the user set nothing.
DEMO_ROLLOUT: dict[str, object] = {
    "rollout_hold_s": 30.0,
    "rollout_min_events": 300,
    "rollout_min_canary": 60,
    "rollout_hash_by": "event",
}


def announce(out: TextIO, line: str) -> None:
    """A line of its own; on a terminal, above the live lines, which are drawn again below."""
    out.write(f"\r\x1b[2K{line}\n" if out.isatty() else f"{line}\n")


async def run_demo_cycle(
    settings: Settings, stop: asyncio.Event, at_s: float, log_path: Path, out: TextIO
) -> None:
    """``--cycle-at``: after ``at_s`` seconds, the quarterly cycle on what the demo's users
    have reported so far (today's curated examples): assemble, retrain, gate and, on accept,
    release: a rollout starts (the live line follows its stages) or, with
    ``L2LOOP_PROMOTION=immediate``, the model is promoted at once. It runs as ``l2loop
    dataset assemble`` in a child process, so that Ctrl-C stops it mid-training instead of
    waiting for it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=at_s)
        return
    today = datetime.now(tz=UTC).date()
    since, until = today.isoformat(), (today + timedelta(days=1)).isoformat()
    announce(out, f"CYCLE {since}..{until}: assemble what users reported, retrain, gate, release")
    private_dir(log_path.parent)
    with open_private(log_path, "ab") as log_file:
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "l2loop", "dataset", "assemble"),
            *("--since", since, "--until", until, "--retrain"),
            env={**os.environ, **settings.to_env()},
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
        finished = asyncio.ensure_future(child.communicate())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            child.terminate()
            await finished
            stopped.cancel()
            return
        stopped.cancel()
    stdout, _ = finished.result()
    if child.returncode != 0:
        announce(out, f"CYCLE failed (exit {child.returncode}); see {log_path}")
        return
    record = CycleRecord.model_validate_json(stdout)
    curated = orjson.loads((Path(record.dataset_path) / "manifest.json").read_bytes())["curated"]
    announce(
        out,
        f"CYCLE {record.period}: distinct curated examples {curated['examples']}, "
        f"new to the base corpus {curated['additions']}; {record.decision()}; "
        f"report {record.report}",
    )


@dataclass(frozen=True, slots=True)
class Spike:
    """``--spike-at``/``--spike-for``: seconds after start, and for how long."""

    at_s: float
    for_s: float


def demo_settings(settings: Settings, window_s: int) -> Settings:
    """``settings`` as the demo runs them: its window, a canary rate that lets each window
    alert, and the demo's rollout where the user set none of its own."""
    unset = {
        name: value for name, value in DEMO_ROLLOUT.items() if name not in settings.model_fields_set
    }
    demo = settings.model_copy(update={"web_port": free_port(), "window_size_s": window_s, **unset})
    return demo.model_copy(update={"canary_probes_per_min": demo_canary_rate(demo)})


def demo_canary_rate(settings: Settings) -> float:
    """Probes a minute that give each window four times the samples an alert needs, of
    benign and of malicious probes alike, so that a spike of a quarter window can alert
    (never fewer than the configured rate)."""
    probes = load_golden(settings.golden_version).probes
    benign = sum(probe.label == 0 for probe in probes)
    scarcer = min(benign, len(probes) - benign) / len(probes)
    per_window = 4 * settings.alert_min_samples / scarcer
    return max(settings.canary_probes_per_min, math.ceil(per_window * 60 / settings.window_size_s))


class LiveSummary:
    """Rolling figures over the last ``span_s`` seconds of verdicts and dead letters."""

    def __init__(self, span_s: float = 5.0) -> None:
        self.span_s = span_s
        self.verdicts: deque[tuple[float, bool, float, float]] = deque()
        self.total_verdicts = 0
        self.total_dead = 0
        self.model_version = "-"
        # A rollout's candidate before 100: its verdicts do not make it the model in service.
        self.candidate: str | None = None

    def add_verdict(self, now: float, payload: dict[str, object]) -> None:
        scored_at = _epoch(payload["scored_at"])
        e2e_ms = max(0.0, (scored_at - _epoch(payload["ts"])) * 1000.0)
        model_ms = float(payload["latency_ms"])  # type: ignore[arg-type]
        self.verdicts.append((now, bool(payload["is_threat"]), model_ms, e2e_ms))
        self.total_verdicts += 1
        version = str(payload["model_version"])
        if version != self.candidate:
            self.model_version = version

    def add_dead_letter(self) -> None:
        self.total_dead += 1

    def current_window(self, window_s: int, now_epoch: float) -> str:
        """The ``windows:latest`` field of this window of the model serving now."""
        start = datetime.fromtimestamp(int(now_epoch) // window_s * window_s, tz=UTC)
        return window_field(start, self.model_version)

    def line(self, now: float) -> str:
        while self.verdicts and self.verdicts[0][0] < now - self.span_s:
            self.verdicts.popleft()
        recent = list(self.verdicts)
        flagged = sum(1 for _, threat, _, _ in recent if threat)
        share = 100.0 * flagged / len(recent) if recent else 0.0
        return (
            f"events/s={len(recent) / self.span_s:.1f}  flagged={share:.1f}%  "
            f"p95_batch={percentile([r[2] for r in recent], 0.95):.1f}ms  "
            f"p95_e2e={percentile([r[3] for r in recent], 0.95):.1f}ms  "
            f"verdicts={self.total_verdicts}  dlq={self.total_dead}  model={self.model_version}"
        )


def _percent(rate: Rate) -> str:
    """A rate and the samples behind it: ``1.2%/240``."""
    return "-" if rate.value is None else f"{percent(rate.value, 1, unit='%')}/{rate.total}"


def _stage(stage: str) -> str:
    return stage if stage == SHADOW else f"{stage}%"


def rollout_state(rollout: Rollout) -> str:
    """The live line's ``rollout=``: ``1.1.0@shadow``, ``1.1.0@10%(paused)``, and once it
    ended ``1.1.0(completed)``, ``1.1.0(rolled-back)`` or ``1.1.0(aborted)``."""
    version = rollout.candidate.version
    if rollout.status == "running":
        return f"{version}@{_stage(rollout.stage)}"
    if rollout.status == "paused":
        return f"{version}@{_stage(rollout.stage)}(paused)"
    return f"{version}({rollout.status.replace('_', '-')})"


def _ended(rollout: Rollout, record: StageRecord) -> str:
    """A line for a stage that ended: the next stage, or how and why the run ended."""
    name = f"ROLLOUT {rollout.candidate.version}"
    if record.outcome == "advanced":
        after = rollout.stages[rollout.stages.index(record.stage) + 1]
        serving = "; it is the model in service now" if after == "100" else ""
        return f"{name} advanced to {_stage(after)} (by the {record.by}){serving}"
    if record.outcome == "completed":
        return f"{name} completed: it serves every event"
    share = 100 * (rollout.candidate_share or 0.0)
    how = "rolled back" if record.outcome == "rolled_back" else "aborted"
    return (
        f"{name} {how} at {_stage(record.stage)}: {rollout.reason}; it had decided {share:.1f}% "
        f"of users' events; {rollout.incumbent.version} serves every event again"
    )


def rollout_news(before: Rollout | None, now: Rollout | None) -> list[str]:
    """The transitions between two readings of the rollout state: a run started, each
    stage that ended since (advanced, completed, rolled back, aborted), paused or resumed."""
    if now is None:
        return []
    same = before is not None and before.run_id == now.run_id
    lines = []
    if not same:
        lines.append(
            f"ROLLOUT {now.candidate.version} started at {_stage(now.stages[0])} against "
            f"{now.incumbent.version}: stages {','.join(now.stages)}, split by "
            f"{now.hash_by} (run {now.run_id})"
        )
    done = len(before.history) if before is not None and same else 0
    lines += [_ended(now, record) for record in now.history[done:]]
    if before is not None and same and before.status != now.status and now.active:
        how = "paused" if now.status == "paused" else "resumed"
        lines.append(f"ROLLOUT {now.candidate.version} {how} at {_stage(now.stage)}")
    return lines


@dataclass
class LoopFigures:
    """What the loop has measured, read from Redis about once a second: this window of the
    model serving now, the open alerts, where reports ended, the active suppressions, and
    the latest rollout."""

    window: WindowStats | None = None
    open_rules: list[str] = field(default_factory=list)
    reports: dict[str, int] = field(default_factory=dict)
    suppressions: int = 0
    rollout: Rollout | None = None

    def line(self) -> str:
        window = self.window
        measured = (
            f"window={window.window_start:%H:%M} fp={_percent(window.canary_fp_rate)} "
            f"reported_fp={_percent(window.reported_fp_rate)} recall={_percent(window.recall)}"
            if window is not None
            else "window=- fp=- reported_fp=- recall=-"
        )
        rules = f"({','.join(sorted(set(self.open_rules)))})" if self.open_rules else ""
        rejected = sum(n for name, n in self.reports.items() if name.startswith("rejected:"))
        return (
            f"{measured}  alerts={len(self.open_rules)}{rules}  "
            f"curated={self.reports.get('curated', 0)} "
            f"quarantined={self.reports.get('quarantined', 0)} rejected={rejected} "
            f"suppressions={self.suppressions}"
            + (f"  rollout={rollout_state(self.rollout)}" if self.rollout is not None else "")
        )


async def _read_figures(
    settings: Settings,
    stop: asyncio.Event,
    summary: LiveSummary,
    figures: LoopFigures,
    out: TextIO,
) -> None:
    """Refreshes ``figures`` every second, and announces the rollout's transitions since the
    last reading (not those of a run found on the first: up did not see them happen). A
    display, not a write: while Redis is away the last figures stay on the line (the
    supervisor says what happened)."""
    client = connect(settings.redis_dsn)
    prefix = settings.topic_prefix
    alerts = AlertStore(client, key_prefix=prefix)
    ledger = ReportLedger(client, key_prefix=prefix, keep_s=settings.report_keep_s)
    suppressions = SuppressionStore(client, key_prefix=prefix)
    rollouts = RolloutStore(client, key_prefix=prefix)
    first = True
    try:
        while not stop.is_set():
            field_name = summary.current_window(settings.window_size_s, time.time())
            try:
                windows, open_alerts, reports, active, rollout = await asyncio.gather(
                    alerts.windows([field_name]),
                    alerts.open_alerts(),
                    ledger.counts(),
                    suppressions.count(),
                    rollouts.get(),
                )
            except TRANSIENT_ERRORS as exc:
                log.debug("live_figures_unavailable", error=str(exc))
            else:
                figures.window = windows[0] if windows else None
                figures.open_rules = [alert.rule for alert in open_alerts.values()]
                figures.reports = reports
                figures.suppressions = active
                for line in [] if first else rollout_news(figures.rollout, rollout):
                    announce(out, line)
                first = False
                figures.rollout = rollout
                summary.candidate = (
                    rollout.candidate.version
                    if rollout is not None and rollout.active and rollout.percent < 100
                    else None
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        await client.aclose()


def alert_line(alert: Alert) -> str:
    """One terminal line per alert state change, as the alerts topic carries them."""
    detail = alert.annotations.get("resolved_by") if alert.status == "resolved" else None
    return (
        f"ALERT {alert.rule} {alert.status}: model {alert.model_version}, window "
        f"{alert.labels.get('window_start', alert.window_start.isoformat())}: "
        f"{detail or alert.annotations.get('description', '')}"
    )


def _epoch(value: object) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def _summarise(
    settings: Settings,
    stop: asyncio.Event,
    out: TextIO,
    supervisor: Supervisor,
    summary: LiveSummary,
    figures: LoopFigures,
) -> None:
    verdicts, dlq = settings.topic(SCAN_VERDICTS), settings.topic(SCAN_EVENTS_DLQ)
    alerts = settings.topic(ALERTS)
    consumer = topic_reader(settings, verdicts, dlq, alerts, from_beginning=False)
    await consumer.start()
    tty = out.isatty()
    next_print = time.monotonic() + 1.0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == dlq:
                        summary.add_dead_letter()
                    elif tp.topic == alerts:
                        raw = RawRecord(
                            tp.topic, tp.partition, record.offset, record.key, record.value
                        )
                        alert = decode_record(raw, Alert, id_field="fingerprint")
                        if not isinstance(alert, DeadLetter):
                            announce(out, alert_line(alert))
                    else:
                        summary.add_verdict(now, orjson.loads(record.value))
            if now >= next_print:
                next_print = now + 1.0
                measured = figures.line()
                if supervisor.notice:
                    measured += f"  | {supervisor.notice}"
                if tty:
                    # Two lines, redrawn in place: the cursor goes back to the first.
                    out.write(f"\r\x1b[2K{summary.line(now)}\n\x1b[2K{measured}\x1b[1A\r")
                else:
                    out.write(f"{summary.line(now)}  {measured}\n")
                out.flush()
    finally:
        await consumer.stop()
        out.write("\n\n" if tty else "\n")


def scheduler_process(settings: Settings, log_path: Path) -> ManagedProcess:
    """``l2loop scheduler``: it serves no port; it is up once the quarterly job is stored."""

    def job_stored() -> bool:
        try:
            return next_cycle_at(settings) is not None
        except TRANSIENT_ERRORS:
            return False

    return l2loop_process(settings, "scheduler", ("scheduler",), None, log_path, job_stored)


async def _run(
    settings: Settings,
    prompts: Sequence[Prompt],
    rate: float,
    duration_s: float,
    spike: Spike | None,
    cycle_at_s: float | None,
    api_url: str,
    supervisor: Supervisor,
    out: TextIO,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration_s > 0:
        loop.call_later(duration_s, stop.set)
    sent = SentPrompts()
    summary, figures = LiveSummary(), LoopFigures()
    jobs: list[Awaitable[object]] = [
        supervisor.watch(stop),
        run_demo_traffic(
            settings.bootstrap_servers,
            settings.topic(SCAN_EVENTS),
            prompts,
            rate_per_s=rate,
            stop=stop,
            on_sent=sent.remember,
        ),
        run_canary(settings, stop),
        run_demo_reporters(settings, stop, api_url=api_url, sent=sent),
        _read_figures(settings, stop, summary, figures, out),
        _summarise(settings, stop, out, supervisor, summary, figures),
    ]
    if spike is not None:
        jobs.append(
            run_spike(
                settings,
                stop,
                at_s=spike.at_s,
                for_s=spike.for_s,
                say=lambda line: announce(out, line),
            )
        )
    if cycle_at_s is not None:
        log_path = settings.data_dir / "logs" / "cycle.log"
        jobs.append(run_demo_cycle(settings, stop, cycle_at_s, log_path, out))
    await asyncio.gather(*jobs)


def run_up(
    settings: Settings,
    prompts: Sequence[Prompt],
    *,
    rate: float,
    duration_s: float,
    window_s: int = DEMO_WINDOW_S,
    spike: Spike | None = None,
    cycle_at_s: float | None = None,
    out: TextIO = sys.stdout,
) -> None:
    with serving(demo_settings(settings, window_s)) as (live, services):
        asyncio.run(ensure_topics(live))
        logs = live.data_dir / "logs"
        log_path = logs / "worker.log"
        api_port = free_port()
        api_url = f"http://{live.api_host}:{api_port}"
        spiking = (
            f"   FP spike: an over-sensitive model rolled out straight to a canary stage "
            f"{spike.at_s:g}s after start, for at most {spike.for_s:g}s"
            if spike is not None
            else ""
        )
        out.write(
            f"l2loop up: broker={','.join(live.bootstrap_servers)} "
            f"redis={redis_address(live.redis_dsn)} prefix={live.topic_prefix} "
            f"model={live.model_dir.name} "
            f"shared state={shared_storage(live).location('')}"
            + (f" (embedded S3 server {live.s3_endpoint})" if live.s3_unsigned else "")
            + "\n"
            f"demo: windows of {window_s}s (production: an hour, L2LOOP_WINDOW_SIZE_S)   "
            f"canaries={live.canary_probes_per_min:g}/min   simulated users report FPs over "
            f"the API{spiking}"
            + (
                f"   quarterly cycle on their reports {cycle_at_s:g}s after start"
                if cycle_at_s is not None
                else ""
            )
            + "\n"
            f"rollouts: stages {live.rollout_stages}, each held {live.rollout_hold_s:g}s and "
            f"{live.rollout_min_events} events (production: an hour, L2LOOP_ROLLOUT_HOLD_S), "
            f"split by {live.rollout_hash_by}\n"
            f"dashboard: {api_url}/?refresh=10   worker log: {log_path}   "
            f"other terminals: `l2loop tail scan-verdicts`, `l2loop alerts`   stop: Ctrl-C\n"
        )
        worker = l2loop_process(live, "worker", ("worker",), live.web_port, log_path)
        api = l2loop_process(
            live, "api", ("api", "--port", str(api_port)), api_port, logs / "api.log"
        )
        scheduler = scheduler_process(live, logs / "scheduler.log")

        async def store_the_job_again() -> None:
            # The embedded Redis keeps nothing across a restart: a scheduler started again
            # stores its quarterly job there again (started from this, the main, thread).
            await asyncio.to_thread(scheduler.stop)
            scheduler.start()
            await asyncio.to_thread(scheduler.wait_until_ready, 60.0)

        after_restart: dict[str, AfterRestart] = {
            # The embedded broker keeps topics in memory: a restarted one has none.
            "tansu": lambda: ensure_topics(live),
            "redis": store_the_job_again,
        }
        children = [Supervised(p, after_restart.get(p.name)) for p in services]
        supervisor = Supervisor(
            [*children, Supervised(worker), Supervised(api), Supervised(scheduler)],
            rule=CrashLoopRule.from_settings(live),
        )
        with announce_up(live, api_url=api_url) as publish_pids:
            worker.start()
            api.start()
            scheduler.start()
            try:
                scheduler.wait_until_ready(60.0)
                out.write(
                    f"scheduler: next quarterly cycle at {_next_cycle(live)} "
                    f"(L2LOOP_SCHEDULER_CRON={live.scheduler_cron!r}, UTC)   "
                    f"scheduler log: {logs / 'scheduler.log'}\n"
                )
                supervisor.on_change = publish_pids
                publish_pids(supervisor.pids)
                asyncio.run(
                    _run(
                        live, prompts, rate, duration_s, spike, cycle_at_s, api_url, supervisor, out
                    )
                )
            finally:
                scheduler.stop()
                api.stop()
                worker.stop(timeout_s=live.shutdown_timeout_s + 5)


def _next_cycle(settings: Settings) -> str:
    when = next_cycle_at(settings)
    return "-" if when is None else f"{when:%Y-%m-%d %H:%M} UTC"
