"""Scale-out of scoring: 1, 2 and 4 ``l2loop worker`` processes (score role, one consumer
group) on an 8-partition scan-events topic, and one of two workers SIGKILLed mid-stream.

    python bench/scale_out.py [--events 40000] [--workers 1 2 4] [--rate 3000]

Throughput: a backlog of ``--events`` scan events read from the start by N workers, first to
last verdict (every worker is up and holds its partitions before the backlog is sent). The
kill: two workers score events sent at ``--rate``/s, one is SIGKILLed when a third of them
have verdicts; every event must still get a verdict (duplicates, which at-least-once allows
for the dead worker's uncommitted batches, are counted), and the time from the kill until
every partition is served again is the largest gap, over the partitions, between the kill
and the partition's first verdict after it. Uses L2LOOP_KAFKA_BROKER / L2LOOP_REDIS_URL when
set, else embedded services.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from scoring_throughput import PROMPTS, fresh, verdicts_reader

from l2loop.infra.embedded import free_port
from l2loop.infra.processes import ManagedProcess, l2loop_process
from l2loop.infra.services import serving_settings
from l2loop.infra.topics import SCAN_EVENTS, ensure_topics
from l2loop.logs import configure
from l2loop.settings import Settings

PARTITIONS = 8


def event(partition: int, number: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"p{partition}-{number}",
            "ts": int(time.time() * 1000),
            "tenant_id": "bench",
            "text": PROMPTS[number % len(PROMPTS)],
        }
    )


async def send(settings: Settings, count: int, rate: float | None) -> None:
    """``count`` events, round robin over the partitions, at ``rate``/s (None: at once)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    topic = settings.topic(SCAN_EVENTS)
    step = max(1, int((rate or 1e9) / 100))
    began = time.monotonic()
    try:
        pending = []
        for start in range(0, count, step):
            for i in range(start, min(count, start + step)):
                partition = i % PARTITIONS
                pending.append(await producer.send(topic, event(partition, i), partition=partition))
            if rate:
                await asyncio.sleep(max(0.0, began + (start + step) / rate - time.monotonic()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@dataclass
class Arrivals:
    """Each verdict's arrival time, by its event id."""

    times: list[tuple[float, str]]

    @property
    def distinct(self) -> int:
        return len({event_id for _, event_id in self.times})

    @property
    def duplicates(self) -> int:
        return len(self.times) - self.distinct

    def rate(self) -> float:
        first, last = self.times[0][0], self.times[-1][0]
        return (len(self.times) - 1) / max(last - first, 1e-9)

    def served_again_s(self, killed_at: float) -> float:
        """The largest wait, over the partitions, from ``killed_at`` to a verdict of it."""
        first_after: dict[str, float] = {}
        for arrived, event_id in self.times:
            partition = event_id.split("-")[0]
            if arrived >= killed_at and partition not in first_after:
                first_after[partition] = arrived
        assert len(first_after) == PARTITIONS, sorted(first_after)
        return max(first_after.values()) - killed_at


async def collect(
    settings: Settings, expected: int, on_count: tuple[int, asyncio.Event] | None = None
) -> Arrivals:
    """Verdicts until ``expected`` distinct events have one; sets the event at a count."""
    consumer = verdicts_reader(settings)
    await consumer.start()
    arrivals = Arrivals([])
    seen: set[str] = set()
    deadline = time.monotonic() + 600
    try:
        while len(seen) < expected:
            assert time.monotonic() < deadline, f"{len(seen)} of {expected} verdicts"
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    event_id = orjson.loads(record.value)["event_id"]
                    arrivals.times.append((now, event_id))
                    seen.add(event_id)
            if on_count is not None and len(seen) >= on_count[0]:
                on_count[1].set()
    finally:
        await consumer.stop()
    return arrivals


@contextmanager
def workers(settings: Settings, count: int, logs: Path) -> Iterator[list[ManagedProcess]]:
    with ExitStack() as stack:
        started = []
        for n in range(count):
            process = l2loop_process(
                settings.model_copy(update={"web_port": free_port(), "worker_roles": "score"}),
                f"worker-{n}",
                ("worker",),
                None,
                logs / f"scale-out-{count}-{n}.log",
                ready=lambda n=n: ASSIGNED in read(logs, count, n),
            )
            process.start()
            stack.callback(process.stop)
            started.append(process)
        # Every member holds partitions: the group has settled on all of them.
        deadline = time.monotonic() + 120
        while not all(settled(read(logs, count, n)) for n in range(count)):
            assert time.monotonic() < deadline, "the group did not settle"
            time.sleep(0.5)
        time.sleep(2.0)
        yield started


ASSIGNED = "event=partitions_assigned"


def settled(log: str) -> bool:
    """Whether a worker's last word on its partitions is an assignment, not a revocation."""
    return log.rfind(ASSIGNED) > log.rfind("Revoking previously assigned")


def read(logs: Path, count: int, n: int) -> str:
    path = logs / f"scale-out-{count}-{n}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def throughput(live: Settings, count: int, events: int) -> Arrivals:
    settings = fresh(live, f"scale{count}").model_copy(update={"partitions": PARTITIONS})
    asyncio.run(ensure_topics(settings))
    with workers(settings, count, live.data_dir):
        asyncio.run(send(settings, events, None))
        return asyncio.run(collect(settings, events))


def kill_one(live: Settings, events: int, rate: float) -> tuple[Arrivals, float]:
    settings = fresh(live, "kill").model_copy(update={"partitions": PARTITIONS})
    asyncio.run(ensure_topics(settings))
    with workers(settings, 2, live.data_dir) as (victim, _):

        async def run() -> tuple[Arrivals, float]:
            third = asyncio.Event()
            collecting = asyncio.create_task(collect(settings, events, (events // 3, third)))
            sending = asyncio.create_task(send(settings, events, rate))
            await third.wait()
            assert victim.process is not None
            os.kill(victim.process.pid, signal.SIGKILL)
            killed_at = time.time()
            await sending
            return await collecting, killed_at

        return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rate", type=float, default=3_000)
    args = parser.parse_args()
    configure("warn")
    base = Settings(data_dir=Path("var/bench"))
    with serving_settings(base) as live:
        rates = {count: throughput(live, count, args.events) for count in args.workers}
        killed, killed_at = kill_one(live, args.events, args.rate)
    print(
        f"{os.cpu_count()} CPU cores for the broker, Redis, the workers and this benchmark; "
        f"{PARTITIONS} partitions; backlog {args.events} events"
    )
    print(f"{'workers':<10}{'events/s':>10}{'per worker':>12}{'duplicates':>12}")
    for count, arrivals in rates.items():
        rate = arrivals.rate()
        print(f"{count:<10}{rate:>10.0f}{rate / count:>12.0f}{arrivals.duplicates:>12}")
    per_partition = Counter(event_id.split("-")[0] for _, event_id in killed.times)
    print(
        f"one of 2 workers SIGKILLed at {args.rate:.0f} events/s after a third of "
        f"{args.events}: {killed.distinct} of {args.events} events got a verdict, "
        f"{killed.duplicates} duplicates; every partition served again "
        f"{killed.served_again_s(killed_at):.1f} s after the kill "
        f"(verdicts per partition {min(per_partition.values())}-{max(per_partition.values())})"
    )


if __name__ == "__main__":
    main()
