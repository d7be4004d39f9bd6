"""``l2loop up``: embedded broker and Redis, a scoring worker, demo traffic, a live summary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import orjson

from l2loop.embedded import ManagedProcess, free_port
from l2loop.services import announce_up, redis_address, serving
from l2loop.settings import Settings
from l2loop.supervision import Supervised, Supervisor
from streams.topics import SCAN_EVENTS, SCAN_EVENTS_DLQ, SCAN_VERDICTS, ensure_topics
from workers.demo_traffic import Prompt, run_demo_traffic


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LiveSummary:
    """Rolling figures over the last ``span_s`` seconds of verdicts and dead letters."""

    def __init__(self, span_s: float = 5.0) -> None:
        self.span_s = span_s
        self.verdicts: deque[tuple[float, bool, float, float]] = deque()
        self.total_verdicts = 0
        self.total_dead = 0
        self.model_version = "-"

    def add_verdict(self, now: float, payload: dict[str, object]) -> None:
        scored_at = _epoch(payload["scored_at"])
        e2e_ms = max(0.0, (scored_at - _epoch(payload["ts"])) * 1000.0)
        model_ms = float(payload["latency_ms"])  # type: ignore[arg-type]
        self.verdicts.append((now, bool(payload["is_threat"]), model_ms, e2e_ms))
        self.total_verdicts += 1
        self.model_version = str(payload["model_version"])

    def add_dead_letter(self) -> None:
        self.total_dead += 1

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


def _epoch(value: object) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def _summarise(
    settings: Settings, stop: asyncio.Event, out: TextIO, supervisor: Supervisor
) -> None:
    from aiokafka import AIOKafkaConsumer

    verdicts, dlq = settings.topic(SCAN_VERDICTS), settings.topic(SCAN_EVENTS_DLQ)
    consumer = AIOKafkaConsumer(
        verdicts,
        dlq,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    summary = LiveSummary()
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
                    else:
                        summary.add_verdict(now, orjson.loads(record.value))
            if now >= next_print:
                next_print = now + 1.0
                text = summary.line(now)
                if supervisor.notice:
                    text += f"  | {supervisor.notice}"
                out.write(f"\r\x1b[2K{text}" if tty else f"{text}\n")
                out.flush()
    finally:
        await consumer.stop()
        out.write("\n")


def l2loop_process(
    settings: Settings, name: str, command: Sequence[str], port: int, log_path: Path
) -> ManagedProcess:
    """``l2loop COMMAND`` as a child ``up`` supervises; it listens on ``port`` when up."""
    return ManagedProcess(
        name,
        [sys.executable, "-m", "l2loop", *command],
        port,
        log_path,
        env={**os.environ, **settings.to_env()},
    )


@contextlib.contextmanager
def running(process: ManagedProcess) -> Iterator[subprocess.Popen[bytes]]:
    """``process`` started for the length of a with-block (benchmarks run workers so)."""
    process.start()
    assert process.process is not None
    try:
        yield process.process
    finally:
        process.stop()


async def _run(
    settings: Settings,
    prompts: Sequence[Prompt],
    rate: float,
    duration_s: float,
    supervisor: Supervisor,
    out: TextIO,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration_s > 0:
        loop.call_later(duration_s, stop.set)
    await asyncio.gather(
        supervisor.watch(stop),
        run_demo_traffic(
            settings.bootstrap_servers,
            settings.topic(SCAN_EVENTS),
            prompts,
            rate_per_s=rate,
            stop=stop,
        ),
        _summarise(settings, stop, out, supervisor),
    )


def run_up(
    settings: Settings,
    prompts: Sequence[Prompt],
    *,
    rate: float,
    duration_s: float,
    out: TextIO = sys.stdout,
) -> None:
    with serving(settings.model_copy(update={"web_port": free_port()})) as (live, services):
        asyncio.run(ensure_topics(live))
        logs = live.data_dir / "logs"
        log_path = logs / "worker.log"
        api_port = free_port()
        api_url = f"http://{live.api_host}:{api_port}"
        out.write(
            f"l2loop up: broker={','.join(live.bootstrap_servers)} "
            f"redis={redis_address(live.redis_dsn)} prefix={live.topic_prefix} "
            f"model={live.model_dir.name}\n"
            f"dashboard: {api_url}/   worker log: {log_path}   "
            f"other terminals: `l2loop tail scan-verdicts`, `l2loop alerts`   stop: Ctrl-C\n"
        )
        worker = l2loop_process(live, "worker", ("worker",), live.web_port, log_path)
        api = l2loop_process(
            live, "api", ("api", "--port", str(api_port)), api_port, logs / "api.log"
        )
        children = [
            # The embedded broker keeps topics in memory: a restarted one has none.
            Supervised(p, (lambda: ensure_topics(live)) if p.name == "tansu" else None)
            for p in services
        ]
        supervisor = Supervisor([*children, Supervised(worker), Supervised(api)])
        with announce_up(live, api_url=api_url) as publish_pids:
            worker.start()
            api.start()
            supervisor.on_change = publish_pids
            publish_pids(supervisor.pids)
            try:
                asyncio.run(_run(live, prompts, rate, duration_s, supervisor, out))
            finally:
                api.stop()
                worker.stop(timeout_s=live.shutdown_timeout_s + 5)
