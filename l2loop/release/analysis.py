"""The comparison at a rollout stage: plain logic over the counters the scorers keep.

The candidate is judged on the stage it is in; the incumbent on everything it decided since
the run started (every stage so far), the larger sample of the same traffic. A check fails
only when the two differ beyond both Wilson 99.9 % bounds plus a tolerance, so that noise
looked at every tick does not roll back a good candidate; it passes when the candidate's own
rate sits inside the incumbent's band, and waits in between. The stage advances only once it
has held long enough, with enough events and canary probes, and every check passes
(docs/decisions/0024-staged-rollout.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from l2loop.schemas.rollout import ArmFigures, Check, Comparison, Outcome, Rollout
from l2loop.schemas.windows import Interval
from l2loop.settings import Settings
from l2loop.stats import quantiles, wilson
from l2loop.stores.rollout import (
    ACTING,
    CANARY_BENIGN,
    CANARY_FP,
    CANARY_MALICIOUS,
    CANARY_TP,
    CANDIDATE,
    DOWN,
    EVENTS,
    FAILED,
    FLAGGED,
    INCUMBENT,
    UP,
    arm_field,
)

# The comparisons are looked at again every tick, hundreds of times in a stage: at 95 %
# bounds noise alone would, sooner or later, roll back a candidate as good as the
# incumbent. A rollback is judged at 99.9 % bounds (z = 3.29), so that repeated looks at one
# stage keep a good candidate's chance of a false rollback small.
Z_DECIDE = 3.2905267314919255


def _bounds(hits: int, total: int) -> Interval:
    return wilson(hits, total, z=Z_DECIDE)


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    hold_s: float
    min_events: int
    min_canary: int
    tolerance: float
    flip_budget: float
    flip_min: int
    min_tenant_events: int
    latency_ratio: float
    latency_alert_ms: float
    error_rate_alert: float
    canary_tenant_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RolloutPolicy:
        return cls(
            hold_s=settings.rollout_hold_s,
            min_events=settings.rollout_min_events,
            min_canary=settings.rollout_min_canary,
            tolerance=settings.rollout_tolerance,
            flip_budget=settings.rollout_flip_budget,
            flip_min=settings.gate_flip_budget_min,
            min_tenant_events=settings.rollout_min_tenant_events,
            latency_ratio=settings.rollout_latency_ratio,
            latency_alert_ms=settings.alert_latency_p95_ms,
            error_rate_alert=settings.alert_error_rate,
            canary_tenant_id=settings.canary_tenant_id,
        )


@dataclass(frozen=True, slots=True)
class Reported:
    """Accepted FP reports on a version's verdicts, over its flags (from the windows)."""

    reported_fp: int = 0
    flagged: int = 0


def sum_counts(stages: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for counts in stages:
        for name, value in counts.items():
            total[name] += value
    return dict(total)


def _latency_p95(counts: Mapping[str, int], arm: str) -> float | None:
    prefix = f"{arm}:lat:"
    histogram = {int(k[len(prefix) :]): v for k, v in counts.items() if k.startswith(prefix)}
    return quantiles(histogram).p95 if histogram else None


def figures(counts: Mapping[str, int], arm: str, version: str, reported: Reported) -> ArmFigures:
    def n(measure: str) -> int:
        return counts.get(arm_field(arm, measure), 0)

    return ArmFigures(
        version=version,
        events=n(EVENTS),
        flagged=n(FLAGGED),
        canary_benign=n(CANARY_BENIGN),
        canary_fp=n(CANARY_FP),
        canary_malicious=n(CANARY_MALICIOUS),
        canary_tp=n(CANARY_TP),
        failed=n(FAILED),
        latency_p95_ms=_latency_p95(counts, arm),
        reported_fp=reported.reported_fp,
    )


def candidate_share(stages: Iterable[Mapping[str, int]]) -> float:
    """The share of users' events (canary probes left out) whose acting verdict the
    candidate made over the given stages: how far a candidate reached users."""
    total = sum_counts(stages)
    candidate = total.get(arm_field(CANDIDATE, ACTING), 0)
    everyone = candidate + total.get(arm_field(INCUMBENT, ACTING), 0)
    return candidate / everyone if everyone else 0.0


def _pct(hits: int, total: int) -> str:
    return f"{hits}/{total} = {100 * hits / total:.2f} %" if total else f"{hits}/0"


def _worse_when_higher(
    name: str, cand: tuple[int, int], inc: tuple[int, int], tolerance: float, *, wait: bool
) -> Check:
    """Fails when the candidate's rate is above the incumbent's beyond both bounds."""
    if cand[1] == 0 or inc[1] == 0:
        outcome = "wait" if wait else "pass"
        return Check(
            name=name,
            outcome=outcome,
            detail=f"not enough samples: candidate {cand[1]}, incumbent {inc[1]}",
        )
    c, i = _bounds(*cand), _bounds(*inc)
    return Check(
        name=name,
        outcome=_judge(
            worse=c.low > i.high + tolerance, unsure=cand[0] / cand[1] > i.high + tolerance
        ),
        detail=f"candidate {_pct(*cand)} (≥ {100 * c.low:.2f} %), "
        f"incumbent {_pct(*inc)} (≤ {100 * i.high:.2f} %)",
    )


def _judge(*, worse: bool, unsure: bool) -> Outcome:
    """A rollback needs the candidate worse beyond both bounds; an advance needs its own
    rate inside the incumbent's band. Between the two, the stage waits for more samples: a
    clearly worse candidate seen on few samples is held until they show it."""
    if worse:
        return "fail"
    return "wait" if unsure else "pass"


def _recall(cand: ArmFigures, inc: ArmFigures, tolerance: float) -> Check:
    if cand.canary_malicious == 0 or inc.canary_malicious == 0:
        return Check(
            name="canary_recall",
            outcome="wait",
            detail=f"not enough canary attacks: candidate {cand.canary_malicious}, "
            f"incumbent {inc.canary_malicious}",
        )
    c = _bounds(cand.canary_tp, cand.canary_malicious)
    i = _bounds(inc.canary_tp, inc.canary_malicious)
    return Check(
        name="canary_recall",
        outcome=_judge(
            worse=c.high < i.low - tolerance,
            unsure=cand.canary_tp / cand.canary_malicious < i.low - tolerance,
        ),
        detail=f"candidate {_pct(cand.canary_tp, cand.canary_malicious)} "
        f"(≤ {100 * c.high:.2f} %), incumbent {_pct(inc.canary_tp, inc.canary_malicious)} "
        f"(≥ {100 * i.low:.2f} %)",
    )


def _tenants(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}


def _flag_rate(
    rollout: Rollout, stage: Mapping[str, int], run: Mapping[str, int], policy: RolloutPolicy
) -> tuple[Check, int, int]:
    """Shadow: each tenant's new flags, a paired comparison on the same events. Later
    stages: each tenant's flag rate under the candidate against its own under the incumbent
    over the run, on the side of more flags.

    Only more flags are harm here. Fewer flags are what a candidate learnt from the reports
    is for (a reporting tenant's false positives go), and the offline gate has already
    judged each tenant's un-flags against its reports (decision 0021); an un-flag that is a
    missed attack is what the canary recall check measures, on prompts whose labels are
    known. Un-flags are counted and shown."""
    canary = policy.canary_tenant_id
    harmed: list[str] = []
    unsure: list[str] = []
    if rollout.stage == "shadow":
        events = _tenants(stage, f"t:{INCUMBENT}:{EVENTS}:")
        ups, downs = _tenants(stage, f"f:{UP}:"), _tenants(stage, f"f:{DOWN}:")
        for tenant, total in sorted(events.items()):
            if tenant == canary or total < policy.min_tenant_events:
                continue
            count = ups.get(tenant, 0)
            # As the gate's budget: a few flips of a small tenant are borderline prompts,
            # not harm; beyond them, the share must exceed the budget beyond its bound.
            if count <= policy.flip_min:
                continue
            if _bounds(count, total).low > policy.flip_budget:
                harmed.append(f"{tenant}: new flags {_pct(count, total)}")
            elif count / total > policy.flip_budget:
                unsure.append(f"{tenant}: new flags {_pct(count, total)}")
        checked = len(
            [t for t, n in events.items() if t != canary and n >= policy.min_tenant_events]
        )
        detail = (
            f"{sum(ups.values())} new flags, {sum(downs.values())} un-flags over "
            f"{checked} tenant(s) with {policy.min_tenant_events}+ events; budget "
            f"{100 * policy.flip_budget:g} % of a tenant's events beyond {policy.flip_min} flips"
        )
        up, down = sum(ups.values()), sum(downs.values())
    else:
        cand_events = _tenants(stage, f"t:{CANDIDATE}:{EVENTS}:")
        cand_flags = _tenants(stage, f"t:{CANDIDATE}:{FLAGGED}:")
        inc_events = _tenants(run, f"t:{INCUMBENT}:{EVENTS}:")
        inc_flags = _tenants(run, f"t:{INCUMBENT}:{FLAGGED}:")
        compared = 0
        for tenant, total in sorted(cand_events.items()):
            if (
                tenant == canary
                or total < policy.min_tenant_events
                or inc_events.get(tenant, 0) < policy.min_tenant_events
            ):
                continue
            compared += 1
            c = _bounds(cand_flags.get(tenant, 0), total)
            i = _bounds(inc_flags.get(tenant, 0), inc_events[tenant])
            rate = cand_flags.get(tenant, 0) / total
            if rate > i.high + policy.flip_budget:
                unsure.append(f"{tenant}: {_pct(cand_flags.get(tenant, 0), total)} flagged")
            if c.low > i.high + policy.flip_budget:
                harmed.append(
                    f"{tenant}: {_pct(cand_flags.get(tenant, 0), total)} flagged by the "
                    f"candidate, {_pct(inc_flags.get(tenant, 0), inc_events[tenant])} by the "
                    "incumbent"
                )
        detail = (
            f"{compared} tenant(s) with {policy.min_tenant_events}+ events compared with their "
            "own flag rate under the incumbent; "
            f"band {100 * policy.flip_budget:g} points beyond the bounds"
        )
        up, down = 0, 0
    named = harmed or unsure
    if named:
        detail = "; ".join(named[:5]) + (f" (+{len(named) - 5} more)" if len(named) > 5 else "")
    outcome = _judge(worse=bool(harmed), unsure=bool(unsure))
    return Check(name="flag_rate", outcome=outcome, detail=detail), up, down


def _latency(stage: str, cand: ArmFigures, inc: ArmFigures, policy: RolloutPolicy) -> Check:
    if stage not in ("shadow", "100"):
        # A split batch gives each model a smaller call, whose fixed cost weighs more per
        # prompt: the times compare fairly only where both models score whole batches.
        return Check(
            name="latency_p95",
            outcome="pass",
            detail="judged in shadow and at 100, where both models score whole batches",
        )
    if cand.latency_p95_ms is None or inc.latency_p95_ms is None or cand.events < policy.min_events:
        # A p95 over a few batches is one batch's time: judged once the stage's minimum is in.
        return Check(
            name="latency_p95",
            outcome="pass",
            detail=f"judged from {policy.min_events} events on (now {cand.events})",
        )
    limit = max(policy.latency_ratio * inc.latency_p95_ms, policy.latency_alert_ms)
    return Check(
        name="latency_p95",
        outcome="fail" if cand.latency_p95_ms > limit else "pass",
        detail=f"candidate {cand.latency_p95_ms:.3f} ms per prompt, incumbent "
        f"{inc.latency_p95_ms:.3f} ms; limit {limit:.3f} ms",
    )


def _errors(cand: ArmFigures, inc: ArmFigures, policy: RolloutPolicy) -> Check:
    if cand.events == 0:
        return Check(name="error_rate", outcome="pass", detail="no events scored yet")
    c = _bounds(cand.failed, cand.events)
    limit = max(policy.error_rate_alert, _bounds(inc.failed, inc.events).high if inc.events else 0)
    return Check(
        name="error_rate",
        outcome="fail" if c.low > limit else "pass",
        detail=f"candidate {_pct(cand.failed, cand.events)}, limit {100 * limit:.3f} %",
    )


def compare(
    rollout: Rollout,
    stage: Mapping[str, int],
    run: Mapping[str, int],
    *,
    reported: Mapping[str, Reported],
    firing: Iterable[str],
    policy: RolloutPolicy,
    now: datetime,
) -> Comparison:
    """The comparison at ``rollout``'s stage: ``stage`` are the stage's counters, ``run``
    the whole run's (this stage included), ``reported`` the windows' FP reports by version,
    ``firing`` the loop's alerts firing for the candidate's version."""
    nothing = Reported()
    cand_reported = reported.get(rollout.candidate.version, nothing)
    inc_reported = reported.get(rollout.incumbent.version, nothing)
    cand = figures(stage, CANDIDATE, rollout.candidate.version, cand_reported)
    inc = figures(run, INCUMBENT, rollout.incumbent.version, inc_reported)
    flag_check, ups, downs = _flag_rate(rollout, stage, run, policy)
    alerts = sorted(firing)
    checks = [
        _worse_when_higher(
            "canary_fp_rate",
            (cand.canary_fp, cand.canary_benign),
            (inc.canary_fp, inc.canary_benign),
            policy.tolerance,
            wait=True,
        ),
        _recall(cand, inc, policy.tolerance),
        _worse_when_higher(
            "reported_fp_rate",
            (cand_reported.reported_fp, cand_reported.flagged),
            (inc_reported.reported_fp, inc_reported.flagged),
            policy.tolerance,
            wait=False,
        ),
        flag_check,
        _latency(rollout.stage, cand, inc, policy),
        _errors(cand, inc, policy),
        Check(
            name="alerts",
            outcome="fail" if alerts else "pass",
            detail=", ".join(alerts) if alerts else "none firing for the candidate's version",
        ),
    ]
    held_s = max(0.0, (now - rollout.stage_started_at).total_seconds())
    canaries = cand.canary_benign + cand.canary_malicious
    ready = (
        held_s >= policy.hold_s
        and cand.events >= policy.min_events
        and canaries >= policy.min_canary
    )
    return Comparison(
        stage=rollout.stage,
        at=now,
        held_s=held_s,
        candidate=cand,
        incumbent=inc,
        flips_up=ups,
        flips_down=downs,
        checks=checks,
        ready=ready,
    )


def waiting_for(comparison: Comparison, policy: RolloutPolicy) -> list[str]:
    """What the stage still waits for before it may advance; empty when it may."""
    waits = []
    if comparison.held_s < policy.hold_s:
        waits.append(f"hold {comparison.held_s:.0f}/{policy.hold_s:g} s")
    if comparison.candidate.events < policy.min_events:
        waits.append(f"events {comparison.candidate.events}/{policy.min_events}")
    canaries = comparison.candidate.canary_benign + comparison.candidate.canary_malicious
    if canaries < policy.min_canary:
        waits.append(f"canary probes {canaries}/{policy.min_canary}")
    waits += [
        f"{check.name}: {check.detail}" for check in comparison.checks if check.outcome == "wait"
    ]
    return waits
