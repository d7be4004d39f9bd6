"""WindowStats and Alert: what the window agent and the alert evaluator publish."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from l2loop.schemas.common import SCHEMA_VERSION, Detail, EventTime, ModelVersion, Name, utc_now


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


def window_field(window_start: datetime, model_version: str) -> str:
    """A window's name where its readers find it: its field in the window agent's
    ``{prefix}windows:latest`` hash and its key on window-stats,
    ``"{start, epoch seconds}|{model version}"``."""
    return f"{int(window_start.timestamp())}|{model_version}"


AlertRule = Literal[
    "fp_rate_spike",
    "recall_drop",
    "latency_p95",
    "error_rate",
    "flag_rate_shift",
    # Not a window rule: a staged rollout ended by its analysis (l2loop.release.rollout).
    "rollout_rolled_back",
]
AlertStatus = Literal["firing", "resolved"]

# Alertmanager writes this instant as the end of an alert that has not ended.
UNSET_END: Final = datetime(1, 1, 1, tzinfo=UTC)


class Alert(BaseModel):
    """One alert of one rule on one window, in one state; a record per state change.

    It maps one-to-one onto an Alertmanager alert: ``rule`` is ``labels.alertname``, and
    ``labels`` carry the rule, the window and the model version, so that the fingerprint (a
    hash of the labels) names the same alert on every worker and in every receiver.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    rule: AlertRule
    status: AlertStatus
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$", max_length=16)
    window_start: EventTime
    window_end: EventTime
    model_version: ModelVersion
    value: float = Field(description="the measured value: a rate, or milliseconds")
    threshold: float = Field(description="the value the rule fires above (below for recall)")
    bound: float | None = Field(
        None, description="the Wilson 95 % bound that crossed the threshold, for proportions"
    )
    samples: int = Field(ge=0, description="the sample count behind the value")
    labels: dict[Annotated[str, Field(max_length=64)], Name] = Field(max_length=16)
    annotations: dict[Annotated[str, Field(max_length=64)], Detail] = Field(max_length=16)
    starts_at: EventTime
    ends_at: EventTime | None = None
    changed_at: EventTime = Field(default_factory=utc_now)


class AlertmanagerAlert(BaseModel):
    """One alert as Alertmanager's webhook sends it (``alerts[]`` of the payload)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: EventTime
    endsAt: EventTime = UNSET_END
    generatorURL: str = ""
    fingerprint: str

    @classmethod
    def from_alert(cls, alert: Alert, generator_url: str = "") -> AlertmanagerAlert:
        return cls(
            status=alert.status,
            labels=alert.labels,
            annotations=alert.annotations,
            startsAt=alert.starts_at,
            endsAt=alert.ends_at or UNSET_END,
            generatorURL=generator_url,
            fingerprint=alert.fingerprint,
        )


class AlertmanagerWebhook(BaseModel):
    """The JSON body of Alertmanager's webhook receiver (payload ``version`` "4")."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: Literal["4"] = "4"
    groupKey: str
    truncatedAlerts: int = 0
    status: AlertStatus
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str = ""
    alerts: list[AlertmanagerAlert]


class PostableAlert(BaseModel):
    """One element of the body of Alertmanager's ``POST /api/v2/alerts``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: EventTime
    endsAt: EventTime
    generatorURL: str = ""
