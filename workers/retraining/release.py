"""How a retraining run releases the candidate the gate accepted, as ``settings.promotion``
says: ``rollout`` starts a staged rollout that the score workers drive from there
(``l2loop.release.rollout``: shadow, then rising shares of traffic, rolled back when the
analysis finds it worse); ``immediate`` makes it the model in service at once
(``l2loop.release.promotion``). ``Release`` is what happened, as the run's report and the
cycle's record state it.

Kept free of the trainers' imports: the scheduler's cycle record names a ``Release``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from l2loop.logs import get_logger
from l2loop.release.promotion import promote
from l2loop.release.rollout import RolloutError, Rollouts
from l2loop.resilience import retry_until_done
from l2loop.settings import Settings
from l2loop.stores.verdicts import connected
from l2model.registry import ModelRegistry

log = get_logger(__name__)


class Release(BaseModel):
    """``promoted``: the candidate is the model in service, and the suppressions its training
    data covers expired. ``rollout``: the run ``run_id`` started at the first of ``stages``.
    ``refused``: no rollout could start (one is running already), ``reason`` says why; the
    candidate stays registered, to be released later."""

    model_config = ConfigDict(frozen=True)

    how: Literal["promoted", "rollout", "refused"]
    suppressions_expired: int = 0
    run_id: str | None = None
    stages: list[str] = Field(default_factory=list)
    reason: str | None = None

    def summary(self) -> str:
        if self.how == "promoted":
            return "promoted"
        if self.how == "rollout":
            return f"rollout {self.run_id} started ({','.join(self.stages)})"
        return f"rollout not started: {self.reason}"


async def release(settings: Settings, registry: ModelRegistry, version: str) -> Release:
    """Releases the registered ``version`` as ``settings.promotion`` says. A rollout the state
    refuses is reported, not raised: the run that trained the candidate still finishes."""
    if settings.promotion == "immediate":
        promotion = await promote(settings, registry, version)
        return Release(how="promoted", suppressions_expired=len(promotion.expired))
    async with connected(settings.redis_dsn) as client:
        rollouts = Rollouts(client, settings, registry)
        try:
            started = await retry_until_done(
                lambda: rollouts.start(version),
                dependency="redis",
                what="rollout_start",
                backoff=settings.backoff,
            )
        except RolloutError as exc:
            log.warning("rollout_not_started", candidate=version, reason=str(exc))
            return Release(how="refused", reason=str(exc))
    return Release(how="rollout", run_id=started.run_id, stages=started.stages)
