"""Rollout state in Redis: the record every score worker applies, and the counts they add.

Keys (under the topic prefix):

- ``rollout:current``: the latest run (a ``Rollout``, JSON), whatever its status. Every
  change is a compare-and-set on its ``revision`` (WATCH/MULTI), so two workers that decide
  at once make one decision and the other's is dropped, to be remade from the new state.
- ``rollout:runs``: finished runs, newest first, trimmed.
- ``rollout:counts:<run>:<stage index>``: a hash of counters the scorers add per batch,
  one round trip per batch (``RolloutCounts`` below names the fields); it outlives the run
  by ``COUNTS_TTL_S``, so a finished run's figures can still be read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, cast

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import WatchError

from l2loop.logs import get_logger
from l2loop.schemas.common import utc_now
from l2loop.schemas.rollout import Rollout

log = get_logger(__name__)

RUNS_KEPT: Final = 100
COUNTS_TTL_S: Final = 30 * 24 * 3600
CLAIM_TTL_S: Final = 30


# The two arms of a comparison, and the counter fields of a stage (``arm`` is one of them):
# ``{arm}:{measure}`` for the measures below, ``{arm}:lat:{bucket}`` the model-time
# histogram (l2loop.stats buckets, weighted by events), ``t:{arm}:{events|flagged}:{tenant}``
# each tenant's flag rate, ``f:{up|down}:{tenant}`` shadow decision flips (tenant ids last:
# they may hold a colon).
CANDIDATE: Final = "candidate"
INCUMBENT: Final = "incumbent"
ARMS: Final = (CANDIDATE, INCUMBENT)
EVENTS, ACTING, FLAGGED, FAILED = "events", "acting", "flagged", "failed"
CANARY_BENIGN, CANARY_FP = "canary_benign", "canary_fp"
CANARY_MALICIOUS, CANARY_TP = "canary_malicious", "canary_tp"
MEASURES: Final = (
    EVENTS,
    ACTING,
    FLAGGED,
    FAILED,
    CANARY_BENIGN,
    CANARY_FP,
    CANARY_MALICIOUS,
    CANARY_TP,
)
UP, DOWN = "up", "down"


def arm_field(arm: str, measure: str) -> str:
    return f"{arm}:{measure}"


def latency_field(arm: str, bucket: int) -> str:
    return f"{arm}:lat:{bucket}"


def tenant_field(arm: str, measure: str, tenant: str) -> str:
    return f"t:{arm}:{measure}:{tenant}"


def flip_field(direction: str, tenant: str) -> str:
    return f"f:{direction}:{tenant}"


class RolloutConflict(RuntimeError):
    """The state changed under a compare-and-set, or forbids the change asked for."""


class RolloutStore:
    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix
        self._current = f"{key_prefix}rollout:current"
        self._runs = f"{key_prefix}rollout:runs"

    def counts_key(self, run_id: str, stage_index: int) -> str:
        return f"{self._prefix}rollout:counts:{run_id}:{stage_index}"

    async def get(self) -> Rollout | None:
        raw = await self._client.get(self._current)
        return None if raw is None else self._readable(raw)

    @staticmethod
    def _readable(raw: bytes | str) -> Rollout | None:
        try:
            return Rollout.model_validate_json(raw)
        except ValidationError as exc:
            # Written by this module; a value nobody can read must not make every scorer
            # fail, nor keep a new rollout from replacing it.
            log.error("rollout_state_unreadable", error=str(exc).splitlines()[0])
            return None

    async def create(self, rollout: Rollout) -> Rollout:
        """Records a new run; refused while another run is running or paused."""

        def check(current: Rollout | None) -> None:
            if current is not None and current.active:
                raise RolloutConflict(
                    f"rollout {current.run_id} of {current.candidate.version} is "
                    f"{current.status} at {current.stage}; abort it first"
                )

        return await self._swap(check, rollout.model_copy(update={"revision": 1}))

    async def replace(self, expected: Rollout, new: Rollout) -> Rollout:
        """Writes ``new`` in place of ``expected`` if nobody wrote meanwhile; raises
        ``RolloutConflict`` otherwise. Finished runs are archived as they finish."""

        def check(current: Rollout | None) -> None:
            if current is None or (current.run_id, current.revision) != (
                expected.run_id,
                expected.revision,
            ):
                raise RolloutConflict("the rollout changed meanwhile")

        written = new.model_copy(
            update={"revision": expected.revision + 1, "updated_at": utc_now()}
        )
        stored = await self._swap(check, written)
        if expected.active and not stored.active:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(self._runs, stored.model_dump_json())
                pipe.ltrim(self._runs, 0, RUNS_KEPT - 1)
                await pipe.execute()
        return stored

    async def _swap(self, check: Callable[[Rollout | None], None], new: Rollout) -> Rollout:
        async with self._client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self._current)
                raw = await pipe.get(self._current)
                check(None if raw is None else self._readable(raw))
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(self._current, new.model_dump_json())
                await pipe.execute()
            except WatchError:
                raise RolloutConflict("the rollout changed meanwhile") from None
        return new

    async def claim(self, run_id: str, what: str, ttl_s: int = CLAIM_TTL_S) -> bool:
        """Whether this caller may do ``what`` for the run now: one worker at a time, for
        ``ttl_s`` (a claimer that dies lets another try once it expires). For the side
        effects that must not happen twice at once: moving the model pointer."""
        claimed = await self._client.set(
            f"{self._prefix}rollout:claim:{run_id}:{what}", b"1", nx=True, ex=ttl_s
        )
        return bool(claimed)

    async def runs(self, limit: int = 20) -> list[Rollout]:
        raw = cast(list[bytes], await self._client.lrange(self._runs, 0, limit - 1))
        found = []
        for item in raw:
            try:
                found.append(Rollout.model_validate_json(item))
            except ValidationError as exc:
                log.error("rollout_run_unreadable", error=str(exc).splitlines()[0])
        return found

    async def add_counts(self, run_id: str, stage_index: int, counts: Mapping[str, int]) -> None:
        """Adds one batch's counts to the stage's counters, in one round trip."""
        if not counts:
            return
        key = self.counts_key(run_id, stage_index)
        async with self._client.pipeline(transaction=False) as pipe:
            for name, value in counts.items():
                pipe.hincrby(key, name, value)
            pipe.expire(key, COUNTS_TTL_S)
            await pipe.execute()

    async def counts(self, run_id: str, stage_index: int) -> dict[str, int]:
        raw = cast(
            dict[bytes, bytes], await self._client.hgetall(self.counts_key(run_id, stage_index))
        )
        return {key.decode(): int(value) for key, value in raw.items()}
