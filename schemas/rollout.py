"""A staged rollout of a candidate model: its stages, where it stands, and what was measured.

One ``Rollout`` record in Redis is the state every score worker applies (l2loop.stores.rollout);
the CLI, the API and the dashboard read the same record. A stage is ``shadow`` (the candidate
scores every event beside the model in service, and acts on none) or a percentage of events
whose acting verdict the candidate makes; ``100`` makes it the model in service.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from l2loop.schemas.common import EventTime, ModelVersion, utc_now

SHADOW: Final = "shadow"


def _stage(value: str) -> str:
    if value == SHADOW:
        return value
    # ASCII digits only: str.isdigit also takes "²", which int() then refuses with a message
    # that does not say what a stage is.
    canonical = value.isascii() and value.isdigit() and value == str(int(value))
    if not canonical or not 1 <= int(value) <= 100:
        raise ValueError(f"a stage is 'shadow' or a whole percentage 1..100, not {value!r}")
    return value


Stage = Annotated[str, AfterValidator(_stage)]


def stage_percent(stage: str) -> int:
    """The share of events, in percent, whose acting verdict the candidate makes at ``stage``."""
    return 0 if stage == SHADOW else int(stage)


def parse_stages(text: str) -> list[str]:
    """``"shadow,10,50,100"`` -> its stages, checked: shadow at most once and first, the
    percentages rising, and 100 last (a rollout ends with the candidate in service)."""
    stages = [_stage(part.strip()) for part in text.split(",") if part.strip()]
    if not stages or stages[-1] != "100":
        raise ValueError(f"the stages must end at 100: {text!r}")
    if SHADOW in stages[1:]:
        raise ValueError(f"shadow can only be the first stage: {text!r}")
    percents = [stage_percent(stage) for stage in stages]
    if any(b <= a for a, b in itertools.pairwise(percents)):
        raise ValueError(f"the stages' percentages must rise: {text!r}")
    return stages


RolloutStatus = Literal["running", "paused", "completed", "rolled_back", "aborted"]
HashBy = Literal["tenant", "event"]
# What a check concluded: it holds, it failed (the rollout is rolled back), or there are not
# yet enough samples to tell (the stage waits).
Outcome = Literal["pass", "fail", "wait"]


class ModelRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: ModelVersion
    path: str


class Check(BaseModel):
    """One comparison of the candidate with the incumbent on the same stage's traffic."""

    model_config = ConfigDict(frozen=True)

    name: str
    outcome: Outcome
    detail: str


class ArmFigures(BaseModel):
    """What one model did in a stage: events it scored (acting or shadow), its flags, its
    canary results, its failures and its model time."""

    model_config = ConfigDict(frozen=True)

    version: ModelVersion
    events: int = 0
    flagged: int = 0
    canary_benign: int = 0
    canary_fp: int = 0
    canary_malicious: int = 0
    canary_tp: int = 0
    failed: int = 0
    latency_p95_ms: float | None = None
    reported_fp: int = 0


class Comparison(BaseModel):
    """The analysis of one stage at one moment: both arms, the flips (shadow), the checks."""

    model_config = ConfigDict(frozen=True)

    stage: Stage
    at: EventTime
    held_s: float = Field(ge=0)
    candidate: ArmFigures
    incumbent: ArmFigures
    # Shadow only: events the candidate would flag that the incumbent did not, and the reverse.
    flips_up: int = 0
    flips_down: int = 0
    checks: list[Check] = Field(default_factory=list)
    # Hold time and sample minimums met: with every check passing, the stage advances.
    ready: bool = False

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.outcome == "fail"]


class StageRecord(BaseModel):
    """A stage that ended, how, and the comparison it ended on."""

    model_config = ConfigDict(frozen=True)

    stage: Stage
    started_at: EventTime
    ended_at: EventTime
    outcome: Literal["advanced", "completed", "rolled_back", "aborted"]
    by: Literal["analysis", "operator"]
    comparison: Comparison | None = None


class Rollout(BaseModel):
    """One rollout run. ``revision`` grows with every write: writers compare and set on it,
    so that two workers deciding at once make one decision."""

    model_config = ConfigDict(frozen=True)

    run_id: str = Field(pattern=r"^[0-9A-Za-z._-]{1,64}$")
    candidate: ModelRef
    incumbent: ModelRef
    stages: list[Stage] = Field(min_length=1)
    stage_index: int = Field(ge=0)
    status: RolloutStatus
    hash_by: HashBy
    started_at: EventTime
    stage_started_at: EventTime
    updated_at: EventTime = Field(default_factory=utc_now)
    revision: int = Field(0, ge=0)
    trained_through: datetime | None = None
    # Why the run ended, when it did not complete; and the stage it ended at.
    reason: str | None = None
    # The share of users' events (canary probes aside) the candidate decided over the run.
    candidate_share: float | None = None
    # Set once a finished run's side effects are done: the pointer restored (a rollback after
    # 100), the alert recorded. A worker that finds it unset finishes them (idempotent).
    settled: bool = False
    history: list[StageRecord] = Field(default_factory=list)
    last: Comparison | None = None

    @property
    def stage(self) -> str:
        return self.stages[self.stage_index]

    @property
    def percent(self) -> int:
        return stage_percent(self.stage)

    @property
    def active(self) -> bool:
        """Whether scorers apply its split: running or paused, not yet finished."""
        return self.status in ("running", "paused")

    @property
    def promoted(self) -> bool:
        """Whether the candidate was made the model in service (it reached 100)."""
        return self.percent == 100 or any(rec.stage == "100" for rec in self.history)
