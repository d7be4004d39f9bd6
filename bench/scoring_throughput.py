"""Scoring throughput and end-to-end latency of the Faust worker (all roles, the default, and
the score role alone) against a plain aiokafka consume -> score -> produce loop with the same
model and the same loop without a model (the broker floor), same broker, same run.

    python bench/scoring_throughput.py [--events 20000] [--latency-events 4000] [--rate 500]
                                       [--model DIR] [--rounds 3]

Throughput: a backlog of ``--events`` scan events is consumed from the start; events/s is
measured between the first and the last verdict seen. Latency: ``--latency-events`` events
are sent at ``--rate`` per second; end-to-end latency is verdict arrival minus send time.
Uses L2LOOP_KAFKA_BROKER / L2LOOP_REDIS_URL when set, else embedded services.

The four paths run ``--rounds`` times (3), one after another in each round: a 2-core
machine's speed drifts between minutes, and a ratio of paths measured in one round holds
the drift out. The table shows medians; each ratio is the median of its rounds' ratios,
with their range.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from l2loop.demo.traffic import demo_prompts
from l2loop.infra.embedded import free_port
from l2loop.infra.processes import l2loop_process, running
from l2loop.infra.services import serving_settings
from l2loop.infra.topics import SCAN_EVENTS, SCAN_VERDICTS, ensure_topics
from l2loop.logs import configure
from l2loop.settings import Settings
from l2loop.stats import percentile
from l2loop.streams.transport import FETCH_MAX_WAIT_MS
from l2model.artifacts import default_model_dir
from l2model.runtime import L2Model, ModelScore


@dataclass
class Figures:
    events_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


PROMPTS = [prompt.text for prompt in demo_prompts()]


def events(count: int, seed: int, sent_ms: int | None = None) -> list[bytes]:
    rng = random.Random(seed)
    return [
        orjson.dumps(
            {
                "event_id": f"b{seed}-{i}",
                "ts": sent_ms or int(time.time() * 1000),
                "tenant_id": "bench",
                "text": rng.choice(PROMPTS),
            }
        )
        for i in range(count)
    ]


async def send_backlog(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(settings.topic(SCAN_EVENTS), v) for v in values])
    finally:
        await producer.stop()


async def send_keyed(
    settings: Settings, topic: str, records: Sequence[tuple[str, bytes, bytes]], rate: float | None
) -> dict[str, float]:
    """Sends ``(id, key, value)`` records to ``topic``, paced at ``rate``/s in steps of 10 ms
    (as fast as it goes when None); returns each id's send time."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    step = max(1, int((rate or 1e9) / 100))
    try:
        pending = []
        began = time.monotonic()
        for start in range(0, len(records), step):
            for record_id, key, value in records[start : start + step]:
                sent[record_id] = time.time()
                pending.append(await producer.send(topic, value, key=key))
            if rate:
                await asyncio.sleep(max(0.0, began + (start + step) / rate - time.monotonic()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def send_paced(settings: Settings, count: int, rate: int, seed: int) -> None:
    """Sends ``count`` events at ``rate``/s, each stamped with its send time."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=1)
    await producer.start()
    step = max(1, rate // 100)
    try:
        for start in range(0, count, step):
            began = time.monotonic()
            for value in events(min(step, count - start), seed + start, int(time.time() * 1000)):
                await producer.send(settings.topic(SCAN_EVENTS), value)
            await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - began)))
    finally:
        await producer.stop()


def verdicts_reader(settings: Settings) -> AIOKafkaConsumer:
    """Every partition of scan-verdicts from the start, in no group, fetched without delay."""
    return AIOKafkaConsumer(
        settings.topic(SCAN_VERDICTS),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )


async def collect_verdicts(
    settings: Settings, expected: int, scorer: subprocess.Popen[bytes], timeout_s: float
) -> list[tuple[float, float]]:
    """(arrival time, event time) for each verdict, as the scorer delivers them."""
    consumer = verdicts_reader(settings)
    await consumer.start()
    seen: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            if scorer.poll() is not None:
                raise RuntimeError(f"the scorer exited with code {scorer.returncode}")
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    seen.append((now, _event_time(orjson.loads(record.value)["ts"])))
    finally:
        await consumer.stop()
    if len(seen) < expected:
        raise RuntimeError(f"only {len(seen)} of {expected} verdicts arrived in {timeout_s}s")
    return seen


def _event_time(ts: str | int) -> float:
    # The score agent writes RFC 3339; the plain loop passes the epoch milliseconds through.
    if isinstance(ts, int):
        return ts / 1000.0
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def measure(
    settings: Settings, scorer: subprocess.Popen[bytes], backlog: int, paced: int, rate: int
) -> Figures:
    await send_backlog(settings, events(backlog, seed=1))
    arrivals = await collect_verdicts(settings, backlog, scorer, timeout_s=600)
    first, last = arrivals[0][0], arrivals[-1][0]
    throughput = (len(arrivals) - 1) / max(last - first, 1e-9)
    collecting = asyncio.create_task(
        collect_verdicts(settings, backlog + paced, scorer, timeout_s=600)
    )
    # The paced events are told apart by their event time, not by arrival order: reading the
    # topic from the start, a partition's paced verdicts may come before another's backlog.
    pacing_from_ms = int(time.time() * 1000)
    await send_paced(settings, paced, rate, seed=2)
    latencies = [
        (arrived - sent) * 1000
        for arrived, sent in await collecting
        if sent * 1000 >= pacing_from_ms
    ]
    return Figures(
        throughput,
        percentile(latencies, 0.50),
        percentile(latencies, 0.95),
        percentile(latencies, 0.99),
    )


# The baselines: nothing but aiokafka, orjson, and the same model in an executor; without
# the model (every verdict "benign"), the broker floor that no scorer can beat.
async def plain_loop(settings: Settings, *, with_model: bool) -> None:
    model = L2Model.load(settings.model_dir, threads=settings.inference_threads)
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    consumer = AIOKafkaConsumer(
        settings.topic(SCAN_EVENTS),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.app_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.session_timeout_s * 1000 / 3),
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await consumer.start()
    await producer.start()
    out = settings.topic(SCAN_VERDICTS)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=50, max_records=settings.batch_size)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            payloads = [orjson.loads(r.value) for r in records]
            texts = [p["text"][: settings.model_max_chars] for p in payloads]
            scores = (
                await loop.run_in_executor(executor, model.score_batch, texts)
                if with_model
                else [NO_MODEL_SCORE] * len(texts)
            )
            pending = []
            for payload, result in zip(payloads, scores, strict=True):
                verdict = {
                    "event_id": payload["event_id"],
                    "ts": payload["ts"],
                    "score": result.score,
                    "is_threat": result.score >= model.threshold,
                    "family": result.family,
                }
                pending.append(await producer.send(out, orjson.dumps(verdict)))
            await asyncio.gather(*pending)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


NO_MODEL_SCORE = ModelScore(score=0.0, family="benign", severity=0.0, context="")


@contextmanager
def plain_loop_process(
    settings: Settings, log_path: Path, *, with_model: bool
) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **settings.to_env()}
    mode = "model" if with_model else "none"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--plain-loop", mode],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=20)


def worker_process(
    settings: Settings, log_path: Path, *, roles: str
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """``l2loop worker`` with ``roles`` (``all``: the default every deployment starts)."""
    settings = settings.model_copy(update={"worker_roles": roles})
    return running(l2loop_process(settings, "worker", ("worker",), settings.web_port, log_path))


@dataclass(frozen=True)
class Contender:
    label: str
    name: str
    start: Callable[[Settings, Path], AbstractContextManager[subprocess.Popen[bytes]]]


CONTENDERS = (
    Contender("worker, all roles", "all", partial(worker_process, roles="all")),
    Contender("worker, score role", "score", partial(worker_process, roles="score")),
    Contender("plain loop + model", "plain", partial(plain_loop_process, with_model=True)),
    Contender("plain loop, no model", "floor", partial(plain_loop_process, with_model=False)),
)


def measure_contender(live: Settings, contender: Contender, sizes: tuple[int, int, int]) -> Figures:
    settings = fresh(live, contender.name)
    asyncio.run(ensure_topics(settings))
    with contender.start(settings, live.data_dir / f"bench-{contender.name}.log") as process:
        return asyncio.run(measure(settings, process, *sizes))


def fresh(settings: Settings, name: str) -> Settings:
    run = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={
            "topic_prefix": f"bench-{name}-{run}.",
            "app_id": f"bench-{name}-{run}",
            "web_port": free_port(),
        }
    )


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")


def median_figures(rounds: Sequence[Figures]) -> Figures:
    return Figures(
        *(
            statistics.median(getattr(f, name) for f in rounds)
            for name in ("events_per_s", "p50_ms", "p95_ms", "p99_ms")
        )
    )


def spread(values: Sequence[float], target: str) -> str:
    """The median of one ratio over the rounds, its range and its target."""
    return f"{statistics.median(values):.2f} (rounds {min(values):.2f}-{max(values):.2f}; {target})"


def machine() -> str:
    """The processor and its core count: the absolute figures follow them, the ratios less."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    processor = names[0] if names else platform.processor() or "unknown processor"
    return f"{processor}, {os.cpu_count()} cores"


def report(model: L2Model, args: argparse.Namespace, rounds: Sequence[dict[str, Figures]]) -> None:
    print(f"machine: {machine()}")
    print(
        f"model {model.manifest.name} {model.version} ({args.model}); backlog {args.events} "
        f"events; latency at {args.rate} events/s over {args.latency_events} events; "
        f"medians of {len(rounds)} interleaved round(s)"
    )
    print(f"{'path':<24}{'events/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for contender in CONTENDERS:
        fig = median_figures([figures[contender.name] for figures in rounds])
        print(
            f"{contender.label:<24}{fig.events_per_s:>10.0f}{fig.p50_ms:>10.1f}"
            f"{fig.p95_ms:>10.1f}{fig.p99_ms:>10.1f}"
        )
    # Each ratio within a round: paths measured a minute apart, not ten.
    paths = [tuple(figures[c.name] for c in CONTENDERS) for figures in rounds]
    scored = statistics.median(score.events_per_s for _, score, _, _ in paths)
    print(
        "throughput score role / plain + model: "
        + spread([ratio(s.events_per_s, p.events_per_s) for _, s, p, _ in paths], "target >= 0.50")
        + f"; score role {scored:.0f} events/s (target >= 10000)"
    )
    print(
        "throughput all roles / plain + model: "
        + spread([ratio(e.events_per_s, p.events_per_s) for e, _, p, _ in paths], "no target")
        + "; plain + model / floor: "
        + spread([ratio(p.events_per_s, f.events_per_s) for _, _, p, f in paths], "no target")
    )
    print(
        "latency all roles / score role: p50 "
        + spread([ratio(e.p50_ms, s.p50_ms) for e, s, _, _ in paths], "target <= 2.00")
        + ", p95 "
        + spread([ratio(e.p95_ms, s.p95_ms) for e, s, _, _ in paths], "target <= 2.00")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-events", type=int, default=4_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of the four paths; medians"
    )
    parser.add_argument("--plain-loop", choices=("model", "none"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        asyncio.run(plain_loop(Settings(), with_model=args.plain_loop == "model"))
        return
    configure("warn")
    base = Settings(data_dir=Path("var/bench"), model_dir=args.model)
    sizes = (args.events, args.latency_events, args.rate)
    with serving_settings(base) as live:
        rounds = [
            {c.name: measure_contender(live, c, sizes) for c in CONTENDERS}
            for _ in range(args.rounds)
        ]
    report(L2Model.load(live.model_dir), args, rounds)


if __name__ == "__main__":
    main()
