"""The rollout record in the session's real Redis: one active run at a time, every change a
compare-and-set on its revision, finished runs archived, and the stage counters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

from l2loop.schemas.rollout import Rollout, RolloutStatus
from l2loop.settings import Settings
from l2loop.stores.rollout import COUNTS_TTL_S, RolloutConflict, RolloutStore
from l2loop.stores.verdicts import connect
from tests.fixtures.rollout_records import make_rollout

T = TypeVar("T")


def with_store(settings: Settings, call: Callable[[RolloutStore], Awaitable[T]]) -> T:
    async def run() -> T:
        client = connect(settings.redis_dsn)
        try:
            return await call(RolloutStore(client, key_prefix=settings.topic_prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


def finished(run: Rollout, status: RolloutStatus = "aborted") -> Rollout:
    return run.model_copy(update={"status": status, "reason": "test"})


def test_nothing_recorded_reads_as_no_rollout(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario(store: RolloutStore) -> tuple[Rollout | None, list[Rollout]]:
        return await store.get(), await store.runs()

    assert with_store(settings, scenario) == (None, [])


def test_create_records_the_run_at_revision_1(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario(store: RolloutStore) -> tuple[Rollout, Rollout | None]:
        created = await store.create(make_rollout(revision=7))
        return created, await store.get()

    created, stored = with_store(settings, scenario)
    assert created.revision == 1
    assert stored == created


@pytest.mark.parametrize("status", ["running", "paused"])
def test_create_is_refused_while_a_run_is_active(
    settings: Settings, redis_client: redis.Redis, status: RolloutStatus
) -> None:
    async def scenario(store: RolloutStore) -> Rollout | None:
        first = await store.create(make_rollout(run_id="first"))
        if status == "paused":
            await store.replace(first, first.model_copy(update={"status": "paused"}))
        with pytest.raises(RolloutConflict, match="rollout first of 1.1.0 is " + status):
            await store.create(make_rollout(run_id="second"))
        return await store.get()

    current = with_store(settings, scenario)
    assert current is not None
    assert (current.run_id, current.status) == ("first", status)


def test_create_is_allowed_once_the_run_finished(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario(store: RolloutStore) -> Rollout | None:
        first = await store.create(make_rollout(run_id="first"))
        await store.replace(first, finished(first))
        await store.create(make_rollout(run_id="second"))
        return await store.get()

    current = with_store(settings, scenario)
    assert current is not None
    assert (current.run_id, current.revision, current.status) == ("second", 1, "running")


def test_replace_writes_the_next_revision(settings: Settings, redis_client: redis.Redis) -> None:
    async def scenario(store: RolloutStore) -> tuple[Rollout, Rollout | None]:
        created = await store.create(make_rollout())
        advanced = await store.replace(created, created.model_copy(update={"stage_index": 1}))
        return advanced, await store.get()

    advanced, stored = with_store(settings, scenario)
    assert (advanced.revision, advanced.stage) == (2, "10")
    assert stored == advanced


def test_replace_from_a_stale_revision_is_refused_and_writes_nothing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario(store: RolloutStore) -> Rollout | None:
        created = await store.create(make_rollout())
        await store.replace(created, created.model_copy(update={"stage_index": 1}))
        with pytest.raises(RolloutConflict, match="changed meanwhile"):
            await store.replace(created, finished(created))
        return await store.get()

    stored = with_store(settings, scenario)
    assert stored is not None
    assert (stored.revision, stored.stage, stored.status) == (2, "10", "running")


def test_replace_of_another_run_at_the_same_revision_is_refused(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The revision restarts with each run: the run id is part of what is compared."""

    async def scenario(store: RolloutStore) -> Rollout | None:
        old = await store.create(make_rollout(run_id="old"))
        await store.replace(old, finished(old))
        new = await store.create(make_rollout(run_id="new"))
        assert new.revision == old.revision
        with pytest.raises(RolloutConflict):
            await store.replace(old, finished(old))
        return await store.get()

    stored = with_store(settings, scenario)
    assert stored is not None
    assert (stored.run_id, stored.status) == ("new", "running")


def test_replace_with_nothing_recorded_is_refused(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario(store: RolloutStore) -> Rollout | None:
        with pytest.raises(RolloutConflict):
            await store.replace(make_rollout(revision=1), finished(make_rollout()))
        return await store.get()

    assert with_store(settings, scenario) is None


Move = Callable[[RolloutStore], Awaitable[Rollout]]


async def race(settings: Settings, moves: list[Move]) -> tuple[Rollout, Rollout | None]:
    """Makes each move at once, each as a worker would, over its own connection; checks that
    exactly one landed and the others raised, and returns it and the record after."""
    clients = [connect(settings.redis_dsn) for _ in moves]
    try:
        results = await asyncio.gather(
            *(
                move(RolloutStore(client, key_prefix=settings.topic_prefix))
                for move, client in zip(moves, clients, strict=True)
            ),
            return_exceptions=True,
        )
        stored = await RolloutStore(clients[0], key_prefix=settings.topic_prefix).get()
    finally:
        for client in clients:
            await client.aclose()
    won = [result for result in results if isinstance(result, Rollout)]
    lost = [result for result in results if not isinstance(result, Rollout)]
    assert len(won) == 1, results
    assert all(isinstance(result, RolloutConflict) for result in lost), results
    return won[0], stored


def test_two_writers_from_the_same_revision_make_one_decision(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Two workers that read the same state and decide at once: one write lands, the other
    raises, round after round."""

    def decide(current: Rollout, reason: str) -> Move:
        return lambda store: store.replace(current, current.model_copy(update={"reason": reason}))

    async def scenario() -> None:
        current, _ = await race(settings, [lambda store: store.create(make_rollout())])
        for number in range(10):
            won, stored = await race(
                settings, [decide(current, f"worker {worker}") for worker in range(2)]
            )
            assert stored == won
            assert won.revision == number + 2
            current = won

    asyncio.run(scenario())


def test_two_runs_started_at_once_record_one(settings: Settings, redis_client: redis.Redis) -> None:
    def start(run_id: str) -> Move:
        return lambda store: store.create(make_rollout(run_id=run_id))

    won, stored = asyncio.run(race(settings, [start("one"), start("other")]))
    assert stored == won


def test_finished_runs_are_archived_newest_first_once_each(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario(store: RolloutStore) -> tuple[list[Rollout], list[Rollout]]:
        first = await store.create(make_rollout(run_id="first"))
        paused = await store.replace(first, first.model_copy(update={"status": "paused"}))
        before = await store.runs()
        ended = await store.replace(paused, finished(paused, "rolled_back"))
        # Settling a finished run rewrites it; it is archived once, when it finished.
        await store.replace(ended, ended.model_copy(update={"settled": True}))
        second = await store.create(make_rollout(run_id="second"))
        await store.replace(second, finished(second, "completed"))
        return before, await store.runs()

    before, runs = with_store(settings, scenario)
    assert before == []
    assert [(run.run_id, run.status) for run in runs] == [
        ("second", "completed"),
        ("first", "rolled_back"),
    ]
    assert runs[1].revision == 3


def test_runs_reads_at_most_the_limit(settings: Settings, redis_client: redis.Redis) -> None:
    async def scenario(store: RolloutStore) -> list[Rollout]:
        for number in range(3):
            run = await store.create(make_rollout(run_id=f"run-{number}"))
            await store.replace(run, finished(run))
        return await store.runs(limit=2)

    assert [run.run_id for run in with_store(settings, scenario)] == ["run-2", "run-1"]


def test_counts_add_up_per_run_and_stage(settings: Settings, redis_client: redis.Redis) -> None:
    async def scenario(store: RolloutStore) -> list[dict[str, int]]:
        await store.add_counts("run-1", 0, {"incumbent:events": 10, "f:up:a:b": 1})
        await store.add_counts("run-1", 0, {"incumbent:events": 5, "candidate:events": 15})
        await store.add_counts("run-1", 1, {"candidate:acting": 3})
        await store.add_counts("run-2", 0, {"candidate:acting": 7})
        await store.add_counts("run-1", 2, {})
        return [
            await store.counts("run-1", 0),
            await store.counts("run-1", 1),
            await store.counts("run-1", 2),
            await store.counts("run-2", 0),
        ]

    assert with_store(settings, scenario) == [
        {"incumbent:events": 15, "candidate:events": 15, "f:up:a:b": 1},
        {"candidate:acting": 3},
        {},
        {"candidate:acting": 7},
    ]
    key = f"{settings.topic_prefix}rollout:counts:run-1:0"
    assert 0 < redis_client.ttl(key) <= COUNTS_TTL_S


def test_an_unreadable_record_reads_as_no_rollout(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A scorer that cannot read the record must keep scoring, not fail every batch."""
    redis_client.set(f"{settings.topic_prefix}rollout:current", b'{"run_id": 1}')

    async def scenario(store: RolloutStore) -> Rollout | None:
        return await store.get()

    assert with_store(settings, scenario) is None
