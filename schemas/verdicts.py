"""Verdict: what the scoring agent says about one ScanEvent."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from l2loop.schemas.common import (
    SCHEMA_VERSION,
    EventTime,
    Identifier,
    ModelVersion,
    Name,
    Probability,
    utc_now,
)
from l2loop.schemas.events import MAX_TEXT_CHARS, GroundTruth, L1Summary

Action = Literal["allow", "warn", "block"]


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Identifier
    ts: EventTime
    tenant_id: Identifier
    model_version: ModelVersion
    score: Probability = Field(description="P(threat)")
    threshold: Probability
    is_threat: bool
    family: Name
    severity: Probability
    context: Name
    action: Action
    latency_ms: float = Field(
        ge=0, description="wall time of the inference batch that scored this event"
    )
    model_ms: float = Field(
        0.0, ge=0, description="model time per prompt: the batch's wall time over its size"
    )
    truncated: bool = Field(description="only the first model_max_chars characters were read")
    suppressed: bool = Field(
        False, description="allowed by a tenant's confirmed-FP suppression; score is the model's"
    )
    shadow: bool = Field(
        False, description="a rollout candidate's verdict in shadow: recorded, never acted on"
    )
    scored_at: EventTime = Field(default_factory=utc_now)
    # Passed through untouched for the window agent; the model never sees it.
    ground_truth: GroundTruth | None = None


class StoredVerdict(BaseModel):
    """What the verdict store keeps for a flagged event: the report path joins on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    text: str = Field(max_length=MAX_TEXT_CHARS)
    l1: L1Summary | None = None
