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

import click
import orjson

from l2loop.embedded import free_port
from l2loop.services import announce_up, serving_settings
from l2loop.settings import Settings
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


async def _summarise(settings: Settings, stop: asyncio.Event, out: TextIO) -> None:
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
                out.write(f"\r\x1b[2K{text}" if tty else f"{text}\n")
                out.flush()
    finally:
        await consumer.stop()
        out.write("\n")


def worker_process(
    settings: Settings, log_path: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return l2loop_process(settings, ("worker",), log_path)


@contextlib.contextmanager
def l2loop_process(
    settings: Settings, command: Sequence[str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``l2loop COMMAND`` in its own process with ``settings``, stopped on exit."""
    env = {**os.environ, **settings.to_env()}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "l2loop", *command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _watch_worker(process: subprocess.Popen[bytes], stop: asyncio.Event) -> None:
    while not stop.is_set():
        if process.poll() is not None:
            stop.set()
            raise click.ClickException(
                f"the scoring worker exited with code {process.returncode}; see its log"
            )
        await asyncio.sleep(0.5)


async def _run(
    settings: Settings,
    prompts: Sequence[Prompt],
    rate: float,
    duration_s: float,
    worker: subprocess.Popen[bytes],
    out: TextIO,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration_s > 0:
        loop.call_later(duration_s, stop.set)
    await asyncio.gather(
        _watch_worker(worker, stop),
        run_demo_traffic(
            settings.bootstrap_servers,
            settings.topic(SCAN_EVENTS),
            prompts,
            rate_per_s=rate,
            stop=stop,
        ),
        _summarise(settings, stop, out),
    )


def run_up(
    settings: Settings,
    prompts: Sequence[Prompt],
    *,
    rate: float,
    duration_s: float,
    out: TextIO = sys.stdout,
) -> None:
    with serving_settings(settings.model_copy(update={"web_port": free_port()})) as live:
        asyncio.run(ensure_topics(live))
        log_path = live.data_dir / "logs" / "worker.log"
        api_port = free_port()
        api_url = f"http://{live.api_host}:{api_port}"
        out.write(
            f"l2loop up: broker={','.join(live.bootstrap_servers)} redis={live.redis_dsn} "
            f"prefix={live.topic_prefix} model={live.model_dir.name}\n"
            f"dashboard: {api_url}/   worker log: {log_path}   "
            f"other terminals: `l2loop tail scan-verdicts`, `l2loop alerts`   stop: Ctrl-C\n"
        )
        api_command = ("api", "--port", str(api_port))
        with (
            announce_up(live, api_url=api_url),
            worker_process(live, log_path) as worker,
            l2loop_process(live, api_command, live.data_dir / "logs" / "api.log"),
        ):
            asyncio.run(_run(live, prompts, rate, duration_s, worker, out))
