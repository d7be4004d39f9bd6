"""The score agent's side of a staged rollout: which model makes each event's acting verdict.

Every score worker follows the rollout record in Redis (l2loop.stores.rollout) on the same
tick as the model pointer, loads the candidate before it applies a stage that needs it, and
then splits by a hash that every worker computes alike: the tenant's id (or the event's,
``L2LOOP_ROLLOUT_HASH_BY=event``) salted with the run id, in 10,000 buckets, so that a
tenant sent to the candidate at 10 % stays with it at 50 %. Canary probes are nobody's
traffic: before 100 they are split half and half by event whatever the stage, so that both
models are measured on them at every stage (decision 0024).

When Redis cannot be read the last plan stays: the rollout holds where it is.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from l2loop.logs import get_logger
from l2loop.resilience import TRANSIENT_ERRORS
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.rollout import SHADOW, Rollout
from l2loop.stores.rollout import RolloutStore
from l2model.runtime import L2Model

log = get_logger(__name__)

BUCKETS = 10_000
CANARY_PERCENT = 50
LOAD_TIMEOUT_S = 120.0
WARM_UP = ["a first batch, so that the graph's buffers exist before it counts"] * 8


def bucket(salt: str, key: str) -> int:
    """A stable bucket in [0, BUCKETS) for ``key`` under ``salt``: the same on every worker."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_share(salt: str, key: str, percent: int) -> bool:
    """Whether ``key`` falls in the first ``percent`` % of the buckets under ``salt``."""
    return bucket(salt, key) < percent * BUCKETS // 100


@dataclass(frozen=True, slots=True)
class Plan:
    """A stage as a worker applies it: the rollout record and the candidate, loaded."""

    rollout: Rollout
    candidate: L2Model

    @property
    def shadow(self) -> bool:
        return self.rollout.stage == SHADOW

    def to_candidate(self, event: ScanEvent, canary_tenant_id: str) -> bool:
        """Whether the candidate makes ``event``'s acting verdict."""
        percent = self.rollout.percent
        if percent in (0, 100):
            return percent == 100
        salt = self.rollout.run_id
        if event.tenant_id == canary_tenant_id:
            return in_share(salt, event.event_id, CANARY_PERCENT)
        key = event.tenant_id if self.rollout.hash_by == "tenant" else event.event_id
        return in_share(salt, key, percent)


class RolloutRouter:
    def __init__(
        self, store: RolloutStore, *, threads: int, local_dir: Callable[[str], Path] = Path
    ) -> None:
        self.plan: Plan | None = None
        self._store = store
        self._threads = threads
        # A candidate's path as a local directory: a registry in a bucket fetches it.
        self._local_dir = local_dir
        self._lock = asyncio.Lock()
        self._unreadable = False

    async def refresh(self) -> None:
        """Applies the rollout record as it is now; keeps the last plan when it cannot."""
        async with self._lock:
            try:
                rollout = await self._store.get()
            except TRANSIENT_ERRORS as exc:
                if not self._unreadable:
                    self._unreadable = True
                    log.warning("rollout_unreadable", holding=self._describe(), error=str(exc))
                return
            if self._unreadable:
                self._unreadable = False
                log.info("rollout_readable")
            if rollout is None or not rollout.active:
                if self.plan is not None:
                    log.info("rollout_split_ended", run=self.plan.rollout.run_id)
                self.plan = None
                return
            candidate = await self._candidate(rollout)
            if candidate is None:
                return
            previous, self.plan = self.plan, Plan(rollout, candidate)
            if previous is None or previous.rollout.stage_index != rollout.stage_index:
                log.info(
                    "rollout_stage_applied",
                    run=rollout.run_id,
                    candidate=rollout.candidate.version,
                    stage=rollout.stage,
                )

    def _load(self, where: str) -> L2Model:
        return L2Model.load(self._local_dir(where), self._threads)

    async def _candidate(self, rollout: Rollout) -> L2Model | None:
        where = rollout.candidate.path
        if self.plan is not None and self.plan.rollout.candidate.path == where:
            return self.plan.candidate
        loop = asyncio.get_running_loop()
        try:
            # Loading parses and optimises a graph: seconds of CPU, kept off the loop. The
            # stage is applied only once its candidate is ready and has run once: a graph's
            # first run allocates its buffers, and that batch's time is no model's latency.
            # Bounded: a load that never returns must not hold the split (and the pointer's
            # refresh beside it) for good; the next refresh tries again.
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                model = await loop.run_in_executor(None, self._load, where)
                await loop.run_in_executor(None, model.score_batch, WARM_UP)
            return model
        except Exception:
            log.exception(
                "rollout_candidate_load_failed",
                run=rollout.run_id,
                candidate=rollout.candidate.version,
                path=where,
            )
            return None

    def _describe(self) -> str:
        if self.plan is None:
            return "no rollout"
        return f"{self.plan.rollout.run_id} at {self.plan.rollout.stage}"
