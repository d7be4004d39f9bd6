"""What the embedded broker (Tansu, memory storage) costs per second at a steady load, as
the topic it serves fills, beside the same load on the empty topic in the same run.

    python bench/embedded_broker_growth.py [--stored 0,10000,20000,40000] [--per-batch 8]
                                           [--rate 200] [--fetch-wait-ms 20]

One fresh broker, one topic of 8 partitions. For each step of ``--stored`` the topic is
first filled to that many records, sent ``--per-batch`` at a time (small produce requests,
as a live producer's are: each becomes one stored batch per partition it touches), then for
10 s a producer sends ``--rate`` records/s while one consumer reads at the tail; the
broker's CPU over those 10 s is read from /proc. A second pass sends the same load with no
consumer: what producing alone costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from l2loop.infra.embedded import free_port, tansu_process

TOPIC = "growth"
PARTITIONS = 8
VALUE = b"x" * 400
STEADY_S = 10


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fill(producer: AIOKafkaProducer, count: int, per_batch: int, tag: str) -> None:
    for start in range(0, count, per_batch):
        await asyncio.gather(
            *[
                await producer.send(TOPIC, VALUE, key=f"{tag}-{i}".encode())
                for i in range(start, min(start + per_batch, count))
            ]
        )


async def steady(producer: AIOKafkaProducer, rate: int, tag: str) -> None:
    """``rate`` records/s for STEADY_S seconds, in ten sends a second."""
    step = max(1, rate // 10)
    began = time.monotonic()
    for tick in range(STEADY_S * 10):
        for i in range(step):
            await producer.send(TOPIC, VALUE, key=f"{tag}-{tick}-{i}".encode())
        await asyncio.sleep(max(0.0, began + (tick + 1) / 10 - time.monotonic()))


async def read_tail(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> int:
    read = 0
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100)
        read += sum(len(records) for records in batches.values())
    return read


async def measure(args: argparse.Namespace, bootstrap: str, pid: int, *, reading: bool) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id="growth",
        auto_offset_reset="latest",
        fetch_max_wait_ms=args.fetch_wait_ms,
    )
    await producer.start()
    await consumer.start()
    stored = 0
    try:
        for target in args.stored:
            # A step below what the steps before left stored measures what is there.
            await fill(producer, max(0, target - stored), args.per_batch, f"fill{target}")
            stored = max(stored, target)
            if consumer.assignment():
                await consumer.seek_to_end()
            stop = asyncio.Event()
            reader = asyncio.create_task(read_tail(consumer, stop) if reading else stop.wait())
            before, began = cpu_seconds(pid), time.monotonic()
            await steady(producer, args.rate, f"steady{target}")
            share = (cpu_seconds(pid) - before) / (time.monotonic() - began)
            stop.set()
            await reader
            side = "produce + tail read" if reading else "produce only"
            print(f"{side:<20}{stored:>10,}{100 * share:>12.0f} %", flush=True)
            stored += args.rate * STEADY_S
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stored", type=lambda s: [int(x) for x in s.split(",")], default=[0, 10_000, 40_000]
    )
    parser.add_argument("--per-batch", type=int, default=8)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    args = parser.parse_args()
    print(
        f"{args.rate} records/s for {STEADY_S} s after filling to N records, {args.per_batch} "
        f"per produce request; consumer fetch wait {args.fetch_wait_ms} ms"
    )
    print(f"{'load':<20}{'stored N':>10}{'broker CPU':>14}")
    for reading in (True, False):
        broker = tansu_process(free_port(), Path(tempfile.mkdtemp(prefix="l2-growth-")))
        broker.start()
        try:
            broker.wait_until_ready()
            assert broker.process is not None  # started above
            asyncio.run(
                measure(args, f"127.0.0.1:{broker.port}", broker.process.pid, reading=reading)
            )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
