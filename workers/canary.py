"""The canary job: golden-set probes with known labels, sent into scan-events all the time.

The score agent treats a probe like any other event (it never reads ``ground_truth``, it only
passes it on to the verdict), so the verdicts of probes measure the model in service: FP
rate on the benign probes, recall on the malicious ones. Probes are told from production
traffic three ways: ``ground_truth.source`` is ``canary``, the tenant is the canary tenant of
the settings, and the event id starts with ``canary-``.

An APScheduler interval job sends, every ``canary_tick_s``, the probes that are due at
``canary_probes_per_min``, as one batch: buffered, then delivered together, retried while
the broker is away (a retried batch may repeat probes; event ids make them recognisable).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from l2loop.infra.topics import SCAN_EVENTS
from l2loop.logs import get_logger
from l2loop.resilience import crash_only, retry_until_done
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.events import GroundTruth, ScanEvent
from l2loop.settings import Settings
from l2model.golden import GoldenProbe, load_golden

log = get_logger(__name__)

CANARY_EVENT_PREFIX = "canary-"
# After a stall (the broker away for a while) the job catches up at most this many ticks'
# worth of probes at once, so an outage does not end in a burst that skews a window.
MAX_CATCH_UP_TICKS = 10

# (topic, key, value) -> the delivery future, once the record is buffered (aiokafka's send).
Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]


class ProbeCycle:
    """The golden probes in a seeded order, reshuffled on every pass, so that each probe is
    sent equally often and the benign/malicious mix of any stretch is the set's own."""

    def __init__(self, probes: Sequence[GoldenProbe], seed: str) -> None:
        if not probes:
            raise ValueError("the golden set holds no probes")
        self._probes = list(probes)
        self._seed = seed
        self._pass = 0
        self._order: list[GoldenProbe] = []

    def take(self, count: int) -> list[GoldenProbe]:
        taken: list[GoldenProbe] = []
        while len(taken) < count:
            if not self._order:
                self._order = list(self._probes)
                random.Random(f"{self._seed}:{self._pass}").shuffle(self._order)
                self._pass += 1
            taken.append(self._order.pop())
        return taken


def canary_event(
    probe: GoldenProbe, *, event_id: str, tenant_id: str, golden_version: str, now: datetime
) -> ScanEvent:
    return ScanEvent(
        event_id=event_id,
        ts=now,
        tenant_id=tenant_id,
        text=probe.text,
        ground_truth=GroundTruth(label=probe.label, family=probe.family, source="canary"),
        metadata={"golden_version": golden_version, "probe_id": probe.probe_id},
    )


class CanaryJob:
    """Sends the probes that are due; ``tick`` is the scheduled job."""

    def __init__(
        self,
        settings: Settings,
        send: Send,
        *,
        run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        golden = load_golden(settings.golden_version)
        self._settings = settings
        self._send = send
        self._topic = settings.topic(SCAN_EVENTS)
        self._clock = clock
        # Distinct per run, so that event ids of a restarted job never repeat earlier ones.
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._probes = ProbeCycle(golden.probes, seed=self.run_id)
        self._per_s = settings.canary_probes_per_min / 60.0
        self._max_batch = max(1, round(self._per_s * settings.canary_tick_s * MAX_CATCH_UP_TICKS))
        self._began: float | None = None
        self.sent = 0

    def due(self) -> int:
        """Probes owed now: the schedule since the first tick, less what was sent, with a
        stall's backlog capped rather than sent in one burst."""
        now = self._clock()
        if self._began is None:
            self._began = now
        owed = (now - self._began) * self._per_s + 1 - self.sent
        if owed > self._max_batch:
            # Forget the part of the backlog beyond the cap: the schedule restarts from here.
            self._began += (owed - self._max_batch) / self._per_s
            owed = self._max_batch
        return max(0, int(owed))

    def batch(self, count: int) -> list[ScanEvent]:
        now = datetime.now(tz=UTC)
        return [
            canary_event(
                probe,
                event_id=f"{CANARY_EVENT_PREFIX}{self.run_id}-{self.sent + i:09d}-{probe.probe_id}",
                tenant_id=self._settings.canary_tenant_id,
                golden_version=self._settings.golden_version,
                now=now,
            )
            for i, probe in enumerate(self._probes.take(count))
        ]

    async def _deliver(self, events: Sequence[ScanEvent]) -> None:
        pending = [
            await self._send(self._topic, event.event_id.encode(), to_bytes(event))
            for event in events
        ]
        await asyncio.gather(*pending)

    async def tick(self) -> int:
        count = self.due()
        if not count:
            return 0
        events = self.batch(count)
        await retry_until_done(
            lambda: self._deliver(events),
            dependency="kafka",
            what="send_canary_probes",
            backoff=self._settings.backoff,
        )
        self.sent += count
        log.debug("canary_probes_sent", probes=count, total=self.sent)
        return count


async def run_canary(settings: Settings, stop: asyncio.Event) -> int:
    """Runs the canary job until ``stop`` is set; returns how many probes it sent.

    ``l2loop up`` runs it beside the demo traffic; ``l2loop canary`` runs it alone."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks="all"
    )
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes) -> Awaitable[Any]:
        future: Awaitable[Any] = await producer.send(topic, value, key=key)
        return future

    job = CanaryJob(settings, send)
    running: set[asyncio.Task[Any]] = set()

    @crash_only("canary")
    async def tick() -> None:
        # The scheduler runs every coroutine job as a task of its own.
        task = cast(asyncio.Task[Any], asyncio.current_task())
        running.add(task)
        try:
            await job.tick()
        finally:
            running.discard(task)

    scheduler = AsyncIOScheduler(timezone=UTC)
    # One tick at a time: a tick held by a broker outage is not joined by the next ones.
    scheduler.add_job(
        tick,
        "interval",
        seconds=settings.canary_tick_s,
        next_run_time=datetime.now(tz=UTC),
        max_instances=1,
        coalesce=True,
        id="canary",
    )
    scheduler.start()
    log.info(
        "canary_started",
        run_id=job.run_id,
        per_min=settings.canary_probes_per_min,
        tenant=settings.canary_tenant_id,
        golden=settings.golden_version,
    )
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        # A tick still waiting for the broker is cancelled, not left to fail on a stopped
        # producer (which crash_only would turn into an exit).
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await producer.stop()
        log.info("canary_stopped", run_id=job.run_id, sent=job.sent)
    return job.sent
