"""The replay's simulated reviewer: one day's work through the quarantine's review
groups, decided as ``l2loop review`` decides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from l2loop.demo.loop_replay import at_most
from l2loop.infra.clients import publisher
from l2loop.replay.record import ReplayOptions, ReviewTally
from l2loop.replay.traffic import REPLAY_TENANT
from l2loop.schemas.reports import QuarantinedReport, ReviewAction
from l2loop.settings import Settings
from l2loop.streams.defences.review import Reviewer
from l2loop.streams.defences.review_groups import ReviewGroup, group_reports
from l2loop.streams.defences.rules import claimed_label
from l2loop.streams.reports import ReportServices

# Who decides in a replay's review log.
REVIEWER = "replay-reviewer"

# Why the simulated reviewer decides as it does, in the review log.
REVIEW_WHY: dict[ReviewAction, str] = {
    "release": "the replayed prompt's label agrees with the claim",
    "discard": "the replayed prompt's label contradicts the claim",
}


@dataclass(frozen=True)
class ReviewStep:
    """One group the simulated reviewer opened, and its decision on each member, in order."""

    group: ReviewGroup
    actions: tuple[ReviewAction, ...]

    def decided(self, action: ReviewAction) -> list[QuarantinedReport]:
        return [
            item
            for item, chosen in zip(self.group.members, self.actions, strict=True)
            if chosen == action
        ]

    @property
    def split(self) -> bool:
        return len(set(self.actions)) > 1


def review_plan(
    groups: Sequence[ReviewGroup], truth: Mapping[str, int], *, share: float, budget: int
) -> list[ReviewStep]:
    """One day of a reviewer who knows the label of every event (``truth``, by event id):
    groups in the order listed (largest first), at most ``budget`` of them and at most
    ``share`` of the reports they hold; a group larger than what is left of the share is
    passed over for smaller ones. A claim that agrees with the truth (a false positive on a
    benign prompt, a miss on an attack) is released, one that contradicts it discarded: a
    group of one or the other is decided whole, a mixed one member by member."""
    allowance = at_most(share, sum(group.size for group in groups))
    steps: list[ReviewStep] = []
    for group in groups:
        if len(steps) == budget:
            break
        if group.size > allowance:
            continue
        allowance -= group.size
        actions: tuple[ReviewAction, ...] = tuple(
            "release" if claimed_label(item.report) == truth[item.report.event_id] else "discard"
            for item in group.members
        )
        steps.append(ReviewStep(group, actions))
    return steps


async def review_day(
    live: Settings, services: ReportServices, truth: Mapping[str, int], options: ReplayOptions
) -> tuple[ReviewTally, set[str]]:
    """The simulated reviewer's day on the replay tenant's quarantine (``review_plan``),
    each decision made as ``l2loop review`` makes it; the tally and the released report
    ids."""
    pending = [
        item for item in await services.queue.pending() if item.report.tenant_id == REPLAY_TENANT
    ]
    groups = group_reports(pending, similarity=live.review_group_similarity)
    steps = review_plan(groups, truth, share=options.review_share, budget=options.review_budget)
    async with publisher(live) as publish:
        reviewer = Reviewer.of(services, publish, live)
        for step in steps:
            for item, action in zip(step.group.members, step.actions, strict=True):
                await reviewer.decide(
                    item, action, REVIEWER, REVIEW_WHY[action], group_id=step.group.group_id
                )
    released = {item.report.report_id for step in steps for item in step.decided("release")}
    tally = ReviewTally(
        pending=len(pending),
        groups=len(groups),
        groups_reviewed=len(steps),
        groups_split=sum(step.split for step in steps),
        released=len(released),
        discarded=sum(len(step.decided("discard")) for step in steps),
    )
    return tally, released
