"""Reading back a sample of recent traffic from scan-events on the real broker: bounded,
fair among tenants, recent, and free of what is not production traffic."""

from __future__ import annotations

import asyncio
import random
import time

from aiokafka import AIOKafkaConsumer

from l2loop.infra.clients import produce_lines
from l2loop.infra.topics import SCAN_EVENTS
from l2loop.settings import Settings
from l2loop.workers.traffic_sample import FairSample, priority, read_traffic_sample
from l2model.gate.counterfactual import TrafficEvent
from l2model.golden import load_golden
from tests.fixtures.traffic import scan_event, send_events

DAY_MS = 24 * 3600 * 1000


def test_a_sample_is_bounded_fair_recent_and_only_production_traffic(topics: Settings) -> None:
    settings = topics.model_copy(update={"gate_traffic_sample": 100})
    golden = load_golden(settings.golden_version).probes[0].text
    send_events(
        settings,
        [scan_event("old", f"a prompt from last month {i}") for i in range(20)],
        timestamp_ms=int(time.time() * 1000) - 8 * DAY_MS,
    )
    values = [
        *(scan_event("big", f"how do I read file number {i} in Go?") for i in range(400)),
        *(
            scan_event("small", f"¿cómo ordeno la lista {i}?", lang="es", source="ide")
            for i in range(15)
        ),
        *(scan_event(settings.canary_tenant_id, f"canary probe {i}") for i in range(10)),
        scan_event("big", golden),
        scan_event("small", golden),
        b"not json",
        b"{}",
        b'{"event_id": "e1", "ts": 0, "tenant_id": "big", "text": "   "}',
        b'{"event_id": "e2", "ts": 0, "tenant_id": "big"}',
    ]
    send_events(settings, values)

    sample = asyncio.run(read_traffic_sample(settings))

    stats = sample.stats
    assert stats.complete and stats.partitions == settings.partitions
    assert (stats.read, stats.too_old, stats.malformed, stats.canary, stats.golden) == (
        451,
        20,
        4,
        10,
        2,
    )
    assert (stats.tenants, stats.sampled, len(sample.events)) == (2, 100, 100)
    by_tenant: dict[str, list[TrafficEvent]] = {}
    for event in sample.events:
        by_tenant.setdefault(event.tenant_id, []).append(event)
    # The small tenant keeps all of its events; the big one fills the rest, each event once.
    assert sorted(by_tenant) == ["big", "small"]
    assert len(by_tenant["small"]) == 15 and len(by_tenant["big"]) == 85
    assert len({e.event_id for e in sample.events}) == 100
    assert {(e.language, e.category) for e in by_tenant["small"]} == {("es", "ide")}
    assert {(e.language, e.category) for e in by_tenant["big"]} == {(None, None)}
    assert all(e.text.startswith("how do I read file number") for e in by_tenant["big"])
    # Seeded by partition and offset: read again, the same sample.
    assert asyncio.run(read_traffic_sample(settings)).events == sample.events


def test_only_the_newest_records_of_a_partition_are_read(topics: Settings) -> None:
    # 40 records at most, 10 per partition; all of the traffic sits on partition 0.
    settings = topics.model_copy(update={"gate_traffic_max_read": 40})
    send_events(
        settings, [scan_event("acme", f"prompt number {i:03d}") for i in range(100)], partition=0
    )
    sample = asyncio.run(read_traffic_sample(settings))
    assert sample.stats.read == 10
    assert sorted(e.text for e in sample.events) == [
        f"prompt number {i:03d}" for i in range(90, 100)
    ]


def test_every_record_up_to_the_end_is_read_however_the_producer_batched_them(
    topics: Settings,
) -> None:
    # Batched as a busy producer batches: the end offset Tansu answers is one past the first
    # record of each partition's last batch, and the rest of the batch is read all the same.
    lines = [scan_event("acme", f"batched prompt {i}") for i in range(300)]
    assert asyncio.run(produce_lines(topics, topics.topic(SCAN_EVENTS), lines)) == 300
    sample = asyncio.run(read_traffic_sample(topics))
    assert sample.stats.read == sample.stats.sampled == 300


def test_a_missing_topic_gives_an_empty_sample_and_is_not_created(settings: Settings) -> None:
    sample = asyncio.run(read_traffic_sample(settings))
    assert sample.events == [] and sample.stats.partitions == 0 and sample.stats.complete

    async def topics_now() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        await consumer.start()
        try:
            return set(await consumer.topics())
        finally:
            await consumer.stop()

    assert settings.topic(SCAN_EVENTS) not in asyncio.run(topics_now())


def test_an_empty_topic_gives_an_empty_complete_sample(topics: Settings) -> None:
    sample = asyncio.run(read_traffic_sample(topics))
    assert sample.events == [] and sample.stats.read == 0
    assert sample.stats.partitions == topics.partitions and sample.stats.complete


def test_no_sample_wanted_reads_nothing() -> None:
    # No broker configured: reading anything would raise.
    sample = asyncio.run(read_traffic_sample(Settings(gate_traffic_sample=0)))
    assert sample.events == [] and sample.stats.read == 0


def test_the_fair_sample_is_max_min_fair_and_independent_of_arrival_order() -> None:
    sizes = {"large": 1_000, "medium": 50, "tiny": 5}
    arrivals = [
        (priority(0, 0, offset), TrafficEvent(tenant_id=tenant, text=f"{tenant} {i}"))
        for offset, (tenant, i) in enumerate(
            (tenant, i) for tenant, count in sizes.items() for i in range(count)
        )
    ]
    samples = []
    for seed in range(3):
        random.Random(seed).shuffle(arrivals)
        fair = FairSample(100)
        for rank, event in arrivals:
            fair.add(rank, event)
        samples.append(fair.events())
    assert samples[0] == samples[1] == samples[2]
    counts = {t: sum(e.tenant_id == t for e in samples[0]) for t in sizes}
    # The largest level that fits: 47 + 47 + 5 = 99 (48 would need 101).
    assert counts == {"large": 47, "medium": 47, "tiny": 5}
    # Each tenant's share is its events of lowest priority: a uniform sample of them.
    lowest = sorted((rank, e.text) for rank, e in arrivals if e.tenant_id == "large")[:47]
    assert [e.text for e in samples[0] if e.tenant_id == "large"] == [text for _, text in lowest]


def test_every_tenant_keeps_one_event_when_there_are_more_tenants_than_room() -> None:
    fair = FairSample(3)
    for offset in range(5):
        fair.add(priority(0, 0, offset), TrafficEvent(tenant_id=f"t{offset}", text="hello"))
    assert fair.level == 1 and len(fair.events()) == 5
