"""The staged rollout as the score workers left it: the latest run and the finished ones."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from l2loop.api.context import ApiContext, ApiError, api_context
from l2loop.release.analysis import RolloutPolicy, waiting_for
from l2loop.schemas.rollout import Rollout
from l2loop.stores.rollout import RUNS_KEPT, RolloutStore

router = APIRouter()
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ApiError, "description": "a parameter out of range"}
}


class RolloutResponse(BaseModel):
    current: Rollout | None = Field(
        description="the latest run, whatever its status; null before the first one"
    )
    waiting_for: list[str] = Field(
        description="what the current stage waits for before it may advance, from its latest "
        "comparison; empty when the run is finished or its stage not yet compared"
    )
    runs: list[Rollout] = Field(description="finished runs, newest first")


@router.get("/v1/rollout", tags=["rollout"], responses=_INVALID)
async def rollout_state(
    context: Annotated[ApiContext, Depends(api_context)],
    limit: Annotated[int, Query(ge=1, le=RUNS_KEPT)] = 10,
) -> RolloutResponse:
    """The latest rollout run, what its stage waits for, and the ``limit`` latest finished."""
    store = RolloutStore(context.redis, key_prefix=context.settings.topic_prefix)
    current = await store.get()
    waits = []
    if current is not None and current.active and current.last is not None:
        waits = waiting_for(current.last, RolloutPolicy.from_settings(context.settings))
    return RolloutResponse(current=current, waiting_for=waits, runs=await store.runs(limit))
