"""A consumer of its own for the agent that must keep pace whatever the worker's others do.

Faust feeds every agent of a worker through one consumer, and when one agent's buffer is full
the consumer waits on it: in the all-roles worker, the window agent draining a backlog of
verdicts held the score agent's next events behind verdicts it had already made (at 500
events/s after a backlog, p95 1.6 s against 72 ms for the score role alone). Faust also
spends two tasks and an acknowledgement on every record. So the score agent reads with a
plain aiokafka consumer in a group of its own (decision 0026):

- records come in batches of up to ``batch_size`` across the worker's partitions;
- up to ``in_flight`` batches are processed at once (while one is delivered, the next is
  scored); each is handed a way to wait for the batch before it, so that what must keep
  the read order (the score agent's publishing: the windows count a verdict behind its
  partition's watermark as late) does;
- a partition's offsets are committed only up to the batches that finished, in the order
  they were read: a crash replays, never skips (at-least-once). Commits run beside the
  reading, one at a time, each taking every offset finished meanwhile: a commit's round trip
  to the coordinator does not hold the next fetch;
- on a rebalance the batches in flight are given ``drain_s`` to finish and are committed;
  any still held (an outage) are cancelled and replayed by the partition's next owner;
- a group that never committed starts where ``carry_from`` (the group that read the topic
  before, Faust's) had committed, so an upgrade does not score the topic again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from l2loop.logs import get_logger
from l2loop.resilience import READINESS, Readiness
from l2loop.schemas.decoding import RawRecord
from l2loop.settings import Settings
from l2loop.streams.sharing import Pressure
from l2loop.streams.transport import FETCH_MAX_WAIT_MS

log = get_logger(__name__)

# Awaits the end of the batch read before this one (however it ended, without raising).
Previous = Callable[[], Awaitable[None]]
# A batch's work, given what orders it after the batch before.
Process = Callable[[Sequence[RawRecord], Previous], Coroutine[object, object, None]]


def consumer_group(settings: Settings, agent: str) -> str:
    """The consumer group of an agent that reads with a consumer of its own."""
    return f"{settings.app_id}.{agent}"


def assignment_of(group_id: str) -> str:
    """What readiness waits for: a member's first assignment in ``group_id``."""
    return f"partitions assigned in consumer group {group_id}"


def raw_record(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    return RawRecord(record.topic, record.partition, record.offset, record.key, record.value)


@dataclass
class _InFlight:
    task: asyncio.Task[None]
    # The offset to commit per partition once the batch is done: its last record's, plus one.
    ends: dict[TopicPartition, int]


class BatchConsumer:
    """Reads ``topics`` in group ``group_id`` and runs ``process`` on each batch (see the
    module's docstring for the order of commits and what a rebalance does)."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        group_id: str,
        batch_size: int,
        within_s: float,
        in_flight: int = 2,
        carry_from: str | None = None,
        readiness: Readiness = READINESS,
        pressure: Pressure | None = None,
    ) -> None:
        self._settings = settings
        self._topics = tuple(topics)
        self._group_id = group_id
        self._batch_size = batch_size
        self._within_ms = max(1, int(within_s * 1000))
        self._in_flight = in_flight
        self._carry_from = carry_from
        self._drain_s = settings.session_timeout_s
        self._pending: deque[_InFlight] = deque()
        # Offsets of batches that finished, not yet sent to the coordinator, and the commit
        # under way (one at a time: offsets go in the order their batches finished).
        self._unsent: dict[TopicPartition, int] = {}
        self._committer: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # The worker is not ready before this consumer's first assignment (its group join).
        self._readiness = readiness
        self._assignment = assignment_of(group_id)
        readiness.expect(self._assignment)
        # Tells the worker's other agents while a batch of this one is in flight.
        self._pressure = pressure

    def _new_consumer(self, group_id: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=int(self._settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self._settings.session_timeout_s * 1000 / 3),
        )

    async def run(self, process: Process, *, started: Callable[[], None] | None = None) -> None:
        """Consumes until cancelled; an exception of ``process`` ends it (the caller crashes)."""
        await self._carry_offsets()
        consumer = self._new_consumer(self._group_id)
        consumer.subscribe(self._topics, listener=_Listener(self))
        # Before start: the first assignment (and its listener) may come while it runs.
        self._consumer = consumer
        try:
            await consumer.start()
            if started is not None:
                started()
            while True:
                while self._pending and (
                    len(self._pending) >= self._in_flight or self._pending[0].task.done()
                ):
                    await self._finish_oldest()
                fetched = await consumer.getmany(
                    timeout_ms=self._within_ms, max_records=self._batch_size
                )
                if fetched:
                    self._start(process, fetched.items())
        finally:
            await self._stop(consumer)

    def _start(
        self,
        process: Process,
        fetched: Iterable[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]],
    ) -> None:
        records: list[RawRecord] = []
        ends: dict[TopicPartition, int] = {}
        for tp, batch in fetched:
            records.extend(raw_record(r) for r in batch)
            ends[tp] = batch[-1].offset + 1
        before = self._pending[-1].task if self._pending else None

        async def previous() -> None:
            # Waits without taking part: cancelling this batch must not cancel the one before.
            if before is not None:
                await asyncio.wait([before])

        task = asyncio.create_task(process(records, previous))
        if self._pressure is not None:
            pressure = self._pressure
            pressure.enter()
            task.add_done_callback(lambda _: pressure.leave())
        self._pending.append(_InFlight(task, ends))

    async def _finish_oldest(self) -> None:
        head = self._pending[0]
        await head.task  # raises what the batch raised: the agent crashes on it
        # A rebalance may have drained (and committed) it meanwhile.
        if self._pending and self._pending[0] is head:
            self._unsent.update(self._finished_prefix())
            if self._committer is None or self._committer.done():
                if self._committer is not None:
                    self._committer.result()  # what a commit raised beyond Kafka's errors
                self._committer = asyncio.create_task(self._commit_unsent())

    async def _commit_unsent(self) -> None:
        while self._unsent:
            ends, self._unsent = self._unsent, {}
            await self._commit(ends)

    async def _commit_finished(self) -> None:
        """Waits for the commit under way, then commits every batch finished since."""
        if self._committer is not None:
            with contextlib.suppress(Exception):
                await self._committer
            self._committer = None
        self._unsent.update(self._finished_prefix())
        await self._commit_unsent()

    def _finished_prefix(self) -> dict[TopicPartition, int]:
        """Takes the batches that finished well, oldest first up to the first that did not,
        out of the queue; the offsets they let commit."""
        ends: dict[TopicPartition, int] = {}
        while self._pending:
            task = self._pending[0].task
            if not task.done() or task.cancelled() or task.exception() is not None:
                break
            ends.update(self._pending.popleft().ends)
        return ends

    async def _commit(self, ends: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        offsets = {tp: end for tp, end in ends.items() if tp in owned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance under way or a broker hiccup: the records are replayed, not lost.
            log.warning("commit_failed", group=self._group_id, error=repr(exc))

    async def _cancel_unfinished(self) -> int:
        """Cancels the batches still running; a batch that failed stays for the loop to raise."""
        held = [entry.task for entry in self._pending if not entry.task.done()]
        for task in held:
            task.cancel()
        if held:
            await asyncio.wait(held)
        self._pending = deque(entry for entry in self._pending if not entry.task.cancelled())
        return len(held)

    def assigned(self) -> None:
        self._readiness.arrived(self._assignment)

    async def drain(self) -> None:
        """Lets the batches in flight finish (for up to ``drain_s``) and commits them; those
        still held are cancelled, and their records replayed by the next owner."""
        if self._pending:
            await asyncio.wait([entry.task for entry in self._pending], timeout=self._drain_s)
        # With the commits of batches that finished before: the next owner starts after them.
        await self._commit_finished()
        cancelled = await self._cancel_unfinished()
        if cancelled:
            log.warning("batches_cancelled_on_rebalance", group=self._group_id, batches=cancelled)

    async def _carry_offsets(self) -> None:
        """Before the group's first join: where this group never committed, it takes the
        offsets ``carry_from`` committed (committed by a member that never joins the group,
        which Kafka allows while the group has no members)."""
        if self._carry_from is None:
            return
        own = self._new_consumer(self._group_id)
        before = self._new_consumer(self._carry_from)
        try:
            await own.start()
            await before.start()
            partitions = [
                TopicPartition(topic, partition)
                for topic in self._topics
                for partition in sorted(own.partitions_for_topic(topic) or ())
            ]
            if any([await own.committed(tp) is not None for tp in partitions]):
                return
            carried = {tp: offset for tp in partitions if (offset := await before.committed(tp))}
            if not carried:
                return
            own.assign(list(carried))
            await own.commit(carried)
            log.info(
                "offsets_carried",
                group=self._group_id,
                source=self._carry_from,
                partitions=len(carried),
                records=sum(carried.values()),
            )
        except KafkaError as exc:
            # Another member joined first, or the broker hiccuped: reading from the group's own
            # start replays, it loses nothing.
            log.warning("offsets_not_carried", group=self._group_id, error=repr(exc))
        finally:
            await own.stop()
            await before.stop()

    async def _stop(self, consumer: AIOKafkaConsumer) -> None:
        # Stopping is not crashing: the batches that finished are committed, those in flight
        # cancelled (their records replayed), best effort and bounded.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._commit_finished(), self._drain_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._cancel_unfinished(), self._drain_s)
        self._consumer = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), self._drain_s)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.drain()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=len(assigned))
        self._owner.assigned()


class StartedWithWorker(Service):
    """Runs ``body`` from the worker's start until it stops. A Faust app task would start only
    once Faust's own consumer had joined its group, and the two group joins (each waits out
    the broker's initial rebalance delay, 3 s by default) would add up."""

    def __init__(self, body: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self._body = body

    @Service.task
    async def _run(self) -> None:
        await self._body()
