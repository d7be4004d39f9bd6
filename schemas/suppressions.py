"""Suppression and EndedSuppression: the Redis values of the suppression store
(l2loop.stores.suppressions)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from l2loop.schemas.common import EventTime, Identifier, Probability, utc_now

PREVIEW_CHARS = 120


class Suppression(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Identifier
    text_key: str = Field(min_length=64, max_length=64)
    created_at: EventTime = Field(description="curated_at of the revision that confirmed it")
    source: str
    reporter_count: int = Field(ge=1)
    confidence: Probability
    event_id: Identifier
    model_version: str
    model_score: Probability
    preview: str = Field(
        description=f"the text's first {PREVIEW_CHARS} characters; empty under a text TTL"
    )


class EndedSuppression(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    suppression: Suppression
    ended: Literal["revoked", "expired"]
    ended_at: EventTime = Field(default_factory=utc_now)
    by: str = Field(description="who revoked it, or the model version whose promotion ended it")
    reason: str = ""
