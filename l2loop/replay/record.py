"""What a replay is asked to do, and what it records of each cycle (``replay.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from l2loop.workers.scheduler import CycleRecord


class ReplayError(RuntimeError):
    """The replay cannot go on (a child process died); the message says where to look."""


@dataclass(frozen=True)
class ReplayOptions:
    share: float
    cycles: int
    seed: int
    out: Path
    sample: int | None = None
    # The simulated reviewer: at most this share of the quarantined reports and this many
    # groups a cycle (its day); 0: nobody reviews.
    review_share: float = 0.0
    review_budget: int = 20
    # The share of confidently flagged attacks a hostile user reports as false positives.
    hostile_share: float = 0.0


class ReportTally(BaseModel):
    """What one cycle's traffic got from the model, what was reported, where it ended."""

    model_config = ConfigDict(frozen=True)

    events: int
    model_version: str
    false_positives: int
    misses: int
    fp_reported: int
    fn_reported: int
    # False-positive claims on attacks the model flagged at or above the high-confidence bar.
    hostile_reported: int = 0
    # The ledger's counters moved by this cycle's reports; rejected (and dead-lettered, which
    # an HTTP report never is) by counter name, e.g. ``rejected:golden_set``.
    curated: int
    quarantined: int
    rejected: dict[str, int]
    # Quota refusals (429) that were posted again after Retry-After: counted by the ledger
    # as rejections, then curated, quarantined or rejected on the later try.
    quota_retries: int

    @property
    def reported(self) -> int:
        return self.fp_reported + self.fn_reported + self.hostile_reported

    @property
    def rejected_finally(self) -> int:
        return sum(self.rejected.values()) - self.quota_retries

    @property
    def accounted(self) -> int:
        return self.curated + self.quarantined + self.rejected_finally


class ReviewTally(BaseModel):
    """What the simulated reviewer did on one cycle's day."""

    model_config = ConfigDict(frozen=True)

    # The replay tenant's quarantined reports when the day began, and their groups.
    pending: int
    groups: int
    groups_reviewed: int
    # Mixed groups (some claims true, some not), decided member by member.
    groups_split: int
    released: int
    discarded: int

    @property
    def reviewed(self) -> int:
        return self.released + self.discarded


class CycleOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    cycle: int
    reports: ReportTally
    record: CycleRecord
    serving_after: str
    review: ReviewTally | None = None
    # Where this cycle's hostile reports stand once its review is done, by ``route:reason``
    # (``refused``: the API refused it).
    hostile: dict[str, int] = Field(default_factory=dict)


class ReplayRecord(BaseModel):
    """``replay.json``: where the run's state is and what each cycle did."""

    data: str
    sample: int | None
    share: float
    seed: int
    review_share: float = 0.0
    review_budget: int = 0
    hostile_share: float = 0.0
    topic_prefix: str
    state_dir: str
    replayed: int
    held_out: int
    not_replayable: int
    start_model: str
    cycles: list[CycleOutcome]


@dataclass(frozen=True)
class ReplayResult:
    record: ReplayRecord
    table: str
    table_path: Path
