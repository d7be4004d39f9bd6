"""WindowStats and Alert: what the window agent and the alert evaluator publish."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import SCHEMA_VERSION, EventTime, utc_now


class Interval(BaseModel):
    """A Wilson 95 % score interval of a proportion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)


class Rate(BaseModel):
    """``hits / total`` with its interval; ``value`` is None while ``total`` is 0."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hits: int = Field(ge=0)
    total: int = Field(ge=0)
    value: float | None = Field(None, ge=0.0, le=1.0)
    interval: Interval | None = None


class LatencyQuantiles(BaseModel):
    """Quantiles read off a mergeable histogram, in milliseconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(ge=0)
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class WindowStats(BaseModel):
    """One event-time window (default one hour) of one model version.

    Re-emitted, with a higher ``revision``, whenever a late event or label changes it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    window_start: EventTime
    window_end: EventTime
    model_version: str
    revision: int = Field(ge=1)
    # Production traffic (canaries excluded)
    events: int = Field(ge=0)
    flagged: int = Field(ge=0)
    suppressed: int = Field(0, ge=0)
    flag_rate: Rate
    # Canary probes: ground truth known at send time
    canary_fp_rate: Rate = Field(description="flagged canary-benign / canary-benign")
    recall: Rate = Field(description="flagged canary-malicious / canary-malicious")
    # Accepted user labels, attributed to the hour of the original event
    reported_fp_rate: Rate = Field(description="events with an accepted FP report / events")
    reported_fn: int = Field(0, ge=0)
    # Errors
    dead_letters: int = Field(0, ge=0)
    error_rate: Rate = Field(description="events the model failed on / events attempted")
    # Latency: model time per prompt, and event time to verdict, kept apart
    model_latency_ms: LatencyQuantiles
    e2e_latency_ms: LatencyQuantiles
    # Event-time bookkeeping
    late_events: int = Field(0, ge=0, description="arrived after the window's end, within grace")
    clamped_future: int = Field(0, ge=0, description="event time ahead of the clock, clamped")
    updated_at: EventTime = Field(default_factory=utc_now)

    @property
    def key(self) -> tuple[datetime, str]:
        return self.window_start, self.model_version
