"""The comparison at a rollout stage, on counters built by hand as the scorers write them.

The candidate is judged on its stage's counters, the incumbent on the whole run's; a check
fails only beyond both Wilson bounds plus a tolerance, so the tests use samples large enough
that a real difference is unmistakable and an equal one is plainly noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from l2loop.release.analysis import (
    Reported,
    RolloutPolicy,
    candidate_share,
    compare,
    sum_counts,
    waiting_for,
)
from l2loop.schemas.rollout import Comparison, Rollout
from l2loop.stores.rollout import CANDIDATE, DOWN, EVENTS, INCUMBENT, UP, flip_field, tenant_field
from tests.fixtures.rollout_records import (
    CANDIDATE_VERSION,
    INCUMBENT_VERSION,
    START,
    arm_counts,
    make_rollout,
)
from tests.fixtures.strategies import examples

CANARY = "l2loop-canary"
POLICY = RolloutPolicy(
    hold_s=600.0,
    min_events=1_000,
    min_canary=100,
    tolerance=0.005,
    flip_budget=0.02,
    flip_min=2,
    min_tenant_events=1,
    latency_ratio=1.5,
    latency_alert_ms=5.0,
    error_rate_alert=0.001,
    canary_tenant_id=CANARY,
)
CHECKS = {
    "canary_fp_rate",
    "canary_recall",
    "reported_fp_rate",
    "flag_rate",
    "latency_p95",
    "error_rate",
    "alerts",
}
HELD = START + timedelta(seconds=POLICY.hold_s)
# A healthy arm at a percentage stage: 2,000 events over two tenants, canary probes of both
# kinds, a little model time.
HEALTHY: dict[str, Any] = {
    "events": 2_000,
    "acting": 2_000,
    "flagged": 60,
    "canary_benign": 200,
    "canary_fp": 2,
    "canary_malicious": 200,
    "canary_tp": 190,
    "latency_ms": 1.0,
    "tenants": {"acme": (1_000, 30), "globex": (1_000, 30)},
}


def at_stage(index: int = 1) -> Rollout:
    """The default run (shadow, 10, 50, 100) at stage ``index``, started at START."""
    return make_rollout(stage_index=index)


def run_compare(
    rollout: Rollout,
    stage: dict[str, int],
    run: dict[str, int] | None = None,
    *,
    reported: dict[str, Reported] | None = None,
    firing: tuple[str, ...] = (),
    now: datetime = HELD,
) -> Comparison:
    """``compare`` with the test policy, the run being this one stage unless ``run`` is given,
    and the stage held exactly its hold time unless ``now`` says otherwise."""
    return compare(
        rollout,
        stage,
        stage if run is None else run,
        reported=reported or {},
        firing=firing,
        policy=POLICY,
        now=now,
    )


def outcomes(comparison: Comparison) -> dict[str, str]:
    return {check.name: check.outcome for check in comparison.checks}


def detail(comparison: Comparison, name: str) -> str:
    (found,) = [check.detail for check in comparison.checks if check.name == name]
    return found


def both(candidate: Mapping[str, Any], incumbent: Mapping[str, Any]) -> dict[str, int]:
    """Counters of both arms, each given as ``arm_counts`` keywords."""
    return arm_counts(CANDIDATE, **candidate) | arm_counts(INCUMBENT, **incumbent)


def test_identical_arms_pass_every_check_and_are_ready() -> None:
    comparison = run_compare(at_stage(), both(HEALTHY, HEALTHY))
    assert set(outcomes(comparison)) == CHECKS
    assert set(outcomes(comparison).values()) == {"pass"}
    assert comparison.failed == []
    assert comparison.ready
    assert waiting_for(comparison, POLICY) == []


def test_the_candidate_is_judged_on_its_stage_and_the_incumbent_on_the_run() -> None:
    shadow = arm_counts(INCUMBENT, events=500, acting=500) | arm_counts(CANDIDATE, events=500)
    stage = both(HEALTHY, HEALTHY)
    comparison = run_compare(at_stage(), stage, sum_counts([shadow, stage]))
    assert comparison.candidate.version == CANDIDATE_VERSION
    assert comparison.incumbent.version == INCUMBENT_VERSION
    assert comparison.candidate.events == 2_000
    assert comparison.incumbent.events == 2_500
    assert comparison.stage == "10"


def test_an_over_sensitive_candidate_fails_the_canary_fp_rate() -> None:
    twitchy = HEALTHY | {"canary_fp": 40}
    comparison = run_compare(at_stage(), both(twitchy, HEALTHY))
    assert outcomes(comparison)["canary_fp_rate"] == "fail"
    assert [check.name for check in comparison.failed] == ["canary_fp_rate"]
    assert "40/200" in detail(comparison, "canary_fp_rate")


def test_a_canary_fp_difference_within_noise_passes() -> None:
    slightly = HEALTHY | {"canary_fp": 4}
    assert outcomes(run_compare(at_stage(), both(slightly, HEALTHY)))["canary_fp_rate"] == "pass"


def test_a_candidate_missing_attacks_fails_canary_recall() -> None:
    blind = HEALTHY | {"canary_tp": 120}
    comparison = run_compare(at_stage(), both(blind, HEALTHY))
    assert [check.name for check in comparison.failed] == ["canary_recall"]
    assert "120/200" in detail(comparison, "canary_recall")


@pytest.mark.parametrize(
    ("caught", "outcome"),
    # The incumbent caught 190 of 200 (95 %; Wilson at 99.9 %, the bounds a rollback is
    # judged at: 87.2-98.1 %).
    # Between a significant loss and a rate inside the incumbent's band, the stage waits.
    [
        (150, "fail"),
        (155, "fail"),
        (160, "wait"),
        (170, "wait"),
        (175, "pass"),
        (190, "pass"),
        (200, "pass"),
    ],
)
def test_canary_recall_fails_only_beyond_the_bounds(caught: int, outcome: str) -> None:
    counts = both(HEALTHY | {"canary_tp": caught}, HEALTHY)
    assert outcomes(run_compare(at_stage(), counts))["canary_recall"] == outcome


def test_without_canary_probes_the_canary_checks_wait_and_the_stage_is_not_ready() -> None:
    no_canary = HEALTHY | {
        "canary_benign": 0,
        "canary_fp": 0,
        "canary_malicious": 0,
        "canary_tp": 0,
    }
    comparison = run_compare(at_stage(), both(no_canary, HEALTHY))
    assert outcomes(comparison)["canary_fp_rate"] == "wait"
    assert outcomes(comparison)["canary_recall"] == "wait"
    assert comparison.failed == []
    assert not comparison.ready
    waits = waiting_for(comparison, POLICY)
    assert "canary probes 0/100" in waits
    assert any(wait.startswith("canary_fp_rate: not enough samples") for wait in waits)
    assert any(wait.startswith("canary_recall: not enough canary attacks") for wait in waits)


def test_reported_fps_beyond_the_incumbents_fail_and_none_reported_passes() -> None:
    counts = both(HEALTHY, HEALTHY)
    worse = {
        CANDIDATE_VERSION: Reported(reported_fp=30, flagged=100),
        INCUMBENT_VERSION: Reported(reported_fp=3, flagged=300),
    }
    comparison = run_compare(at_stage(), counts, reported=worse)
    assert [check.name for check in comparison.failed] == ["reported_fp_rate"]
    assert comparison.candidate.reported_fp == 30
    # No reports yet is not a reason to hold a stage: the canary measures FPs meanwhile.
    assert outcomes(run_compare(at_stage(), counts))["reported_fp_rate"] == "pass"


def shadow_stage(flips: dict[str, tuple[int, int]], events: int = 1_000) -> dict[str, int]:
    """A shadow stage where every tenant in ``flips`` sent ``events`` and the candidate flipped
    (up, down) of their decisions."""
    tenants = {tenant: (events, 0) for tenant in flips}
    counts = both(HEALTHY | {"acting": 0, "tenants": {}}, HEALTHY | {"tenants": tenants})
    for tenant, (up, down) in flips.items():
        if up:
            counts[flip_field(UP, tenant)] = up
        if down:
            counts[flip_field(DOWN, tenant)] = down
    return counts


def test_shadow_flips_over_budget_on_one_tenant_fail_naming_that_tenant() -> None:
    counts = shadow_stage({"acme": (80, 0), "globex": (3, 2), "initech": (0, 0)})
    comparison = run_compare(at_stage(0), counts)
    assert outcomes(comparison)["flag_rate"] == "fail"
    text = detail(comparison, "flag_rate")
    assert "acme: new flags 80/1000" in text
    assert "globex" not in text and "initech" not in text
    assert (comparison.flips_up, comparison.flips_down) == (83, 2)


def test_shadow_un_flags_are_shown_and_left_to_canary_recall() -> None:
    """Fewer flags are what a candidate learnt from reports is for; an un-flagged attack is
    what canary recall measures, so un-flags alone never fail the flag-rate check."""
    comparison = run_compare(at_stage(0), shadow_stage({"acme": (0, 90), "globex": (0, 0)}))
    assert outcomes(comparison)["flag_rate"] == "pass"
    assert comparison.flips_down == 90
    assert "90 un-flags" in detail(comparison, "flag_rate")


def test_shadow_flips_within_budget_pass() -> None:
    comparison = run_compare(at_stage(0), shadow_stage({"acme": (5, 4), "globex": (6, 0)}))
    assert outcomes(comparison)["flag_rate"] == "pass"
    assert (comparison.flips_up, comparison.flips_down) == (11, 4)
    assert "2 tenant(s)" in detail(comparison, "flag_rate")


def test_the_canary_tenants_flips_are_not_a_tenants_harm() -> None:
    """The canary sends attacks and benign probes on purpose: a candidate that flags its
    attacks differently is measured by the canary checks, not by the flag-rate budget."""
    comparison = run_compare(at_stage(0), shadow_stage({CANARY: (400, 300), "acme": (1, 0)}))
    assert outcomes(comparison)["flag_rate"] == "pass"
    assert CANARY not in detail(comparison, "flag_rate")
    assert "1 tenant(s)" in detail(comparison, "flag_rate")


def partial_stage_counts(
    candidate_tenants: dict[str, tuple[int, int]],
    incumbent_tenants: dict[str, tuple[int, int]],
) -> tuple[dict[str, int], dict[str, int]]:
    """Stage 10 after shadow: the incumbent's per-tenant figures lie in the shadow stage (a
    tenant hashed to the candidate has none at 10), the candidate's in the stage."""
    shadow = arm_counts(INCUMBENT, **(HEALTHY | {"tenants": incumbent_tenants}))
    stage = both(HEALTHY | {"tenants": candidate_tenants}, HEALTHY | {"tenants": {}})
    return stage, sum_counts([shadow, stage])


def test_at_a_percentage_stage_a_tenant_flagged_far_more_fails_naming_it() -> None:
    stage, run = partial_stage_counts(
        {"acme": (1_000, 300), "globex": (1_000, 31)},
        {"acme": (2_000, 60), "globex": (2_000, 60)},
    )
    comparison = run_compare(at_stage(1), stage, run)
    assert outcomes(comparison)["flag_rate"] == "fail"
    text = detail(comparison, "flag_rate")
    assert "acme: 300/1000 = 30.00 % flagged by the candidate, 60/2000 = 3.00 % by the" in text
    assert "globex" not in text
    # Flips are a shadow measure only.
    assert (comparison.flips_up, comparison.flips_down) == (0, 0)


def test_at_a_percentage_stage_a_tenant_flagged_far_less_is_not_harm() -> None:
    stage, run = partial_stage_counts({"acme": (1_000, 0)}, {"acme": (2_000, 400)})
    comparison = run_compare(at_stage(2), stage, run)
    assert outcomes(comparison)["flag_rate"] == "pass"


def test_at_a_percentage_stage_a_tenant_is_compared_with_its_rate_over_the_run() -> None:
    """acme flags 3 % under both models: equal over the run though the incumbent saw none of
    acme's events at this stage. A tenant the incumbent never scored, and the canary, are
    not compared."""
    stage, run = partial_stage_counts(
        {"acme": (1_000, 30), "newco": (1_000, 900), CANARY: (400, 200)},
        {"acme": (2_000, 60), CANARY: (400, 10)},
    )
    assert stage.get(tenant_field(INCUMBENT, EVENTS, "acme")) is None
    comparison = run_compare(at_stage(1), stage, run)
    assert outcomes(comparison)["flag_rate"] == "pass"
    assert detail(comparison, "flag_rate").startswith("1 tenant(s) with 1+ events compared")


def test_latency_beyond_the_ratio_and_the_alert_level_fails() -> None:
    slow = HEALTHY | {"latency_ms": 12.0}
    comparison = run_compare(at_stage(0), both(slow, HEALTHY | {"latency_ms": 4.0}))
    assert [check.name for check in comparison.failed] == ["latency_p95"]
    assert comparison.candidate.latency_p95_ms is not None
    assert comparison.candidate.latency_p95_ms > 6.0


def test_latency_under_the_alert_level_passes_whatever_the_ratio() -> None:
    """Three times as slow but within the loop's own latency alert: not a reason to roll back."""
    counts = both(HEALTHY | {"latency_ms": 3.0}, HEALTHY | {"latency_ms": 1.0})
    assert outcomes(run_compare(at_stage(0), counts))["latency_p95"] == "pass"


def test_latency_is_not_judged_where_a_split_batch_gives_each_model_a_smaller_call() -> None:
    counts = both(HEALTHY | {"latency_ms": 12.0}, HEALTHY | {"latency_ms": 4.0})
    assert outcomes(run_compare(at_stage(1), counts))["latency_p95"] == "pass"
    assert outcomes(run_compare(at_stage(3), counts))["latency_p95"] == "fail"


def test_latency_within_the_ratio_passes_above_the_alert_level() -> None:
    counts = both(HEALTHY | {"latency_ms": 11.0}, HEALTHY | {"latency_ms": 10.0})
    assert outcomes(run_compare(at_stage(0), counts))["latency_p95"] == "pass"


def test_a_candidate_that_fails_to_score_fails_the_error_rate() -> None:
    failing = HEALTHY | {"failed": 100}
    comparison = run_compare(at_stage(), both(failing, HEALTHY))
    assert [check.name for check in comparison.failed] == ["error_rate"]
    assert "100/2000" in detail(comparison, "error_rate")


def test_errors_as_frequent_as_the_incumbents_pass() -> None:
    counts = both(HEALTHY | {"failed": 20}, HEALTHY | {"failed": 20})
    assert outcomes(run_compare(at_stage(), counts))["error_rate"] == "pass"


def test_an_alert_firing_for_the_candidate_fails_naming_it() -> None:
    comparison = run_compare(
        at_stage(), both(HEALTHY, HEALTHY), firing=("fp_rate_high (canary FP rate 4 %)",)
    )
    assert [check.name for check in comparison.failed] == ["alerts"]
    assert detail(comparison, "alerts") == "fp_rate_high (canary FP rate 4 %)"


@pytest.mark.parametrize(
    ("held_s", "changes", "waits"),
    [
        (POLICY.hold_s - 1, {}, "hold 599/600 s"),
        (POLICY.hold_s, {"events": 999}, "events 999/1000"),
        (
            POLICY.hold_s,
            {"canary_benign": 50, "canary_fp": 0, "canary_malicious": 49, "canary_tp": 49},
            "canary probes 99/100",
        ),
    ],
)
def test_a_stage_is_ready_only_once_held_with_enough_events_and_canary_probes(
    held_s: float, changes: dict[str, int], waits: str
) -> None:
    counts = both(HEALTHY | changes, HEALTHY)
    comparison = run_compare(at_stage(), counts, now=START + timedelta(seconds=held_s))
    assert comparison.failed == []
    assert not comparison.ready
    assert waiting_for(comparison, POLICY) == [waits]


def test_the_hold_counts_from_the_stages_start() -> None:
    rollout = at_stage().model_copy(update={"stage_started_at": HELD})
    comparison = run_compare(rollout, both(HEALTHY, HEALTHY), now=HELD + timedelta(seconds=30))
    assert comparison.held_s == 30
    assert not comparison.ready


def test_candidate_share_is_its_acting_verdicts_over_all_acting_verdicts() -> None:
    shadow = arm_counts(INCUMBENT, events=1_000, acting=1_000) | arm_counts(CANDIDATE, events=1_000)
    ten = arm_counts(INCUMBENT, events=900, acting=900) | arm_counts(
        CANDIDATE, events=100, acting=100
    )
    half = arm_counts(INCUMBENT, events=500, acting=500) | arm_counts(
        CANDIDATE, events=500, acting=500
    )
    assert candidate_share([shadow]) == 0.0
    assert candidate_share([shadow, ten, half]) == pytest.approx(600 / 3_000)
    assert candidate_share([]) == 0.0


# -- properties -----------------------------------------------------------------------------

counts_of = st.integers(min_value=0, max_value=50_000)


@st.composite
def arms(draw: st.DrawFn) -> dict[str, Any]:
    events = draw(counts_of)
    benign, malicious = draw(counts_of), draw(counts_of)
    tenants = draw(
        st.dictionaries(
            st.sampled_from(["acme", "globex", "initech", CANARY]),
            st.integers(1, 5_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
            max_size=4,
        )
    )
    return {
        "events": events,
        "acting": events,
        "flagged": draw(st.integers(0, events)),
        "failed": draw(st.integers(0, events)),
        "canary_benign": benign,
        "canary_fp": draw(st.integers(0, benign)),
        "canary_malicious": malicious,
        "canary_tp": draw(st.integers(0, malicious)),
        "latency_ms": draw(st.none() | st.floats(0.01, 1_000.0)),
        "tenants": tenants,
    }


@hypothesis_settings(max_examples=examples(300))
@given(arms(), st.integers(0, 3), st.integers(0, 5_000), st.integers(0, 5_000))
def test_identical_arms_never_fail_whatever_the_counts(
    arm: dict[str, Any], index: int, reported_fp: int, flagged: int
) -> None:
    """Whatever was counted, a candidate that did exactly what the incumbent did is never
    rolled back (in shadow: the same decisions, so no flips)."""
    counts = both(arm, arm)
    reported = Reported(reported_fp=min(reported_fp, flagged), flagged=flagged)
    comparison = run_compare(
        at_stage(index),
        counts,
        reported={CANDIDATE_VERSION: reported, INCUMBENT_VERSION: reported},
    )
    assert comparison.failed == []


@st.composite
def canary_fps(draw: st.DrawFn) -> tuple[int, int, int]:
    """Benign canary probes and two counts of FPs among them, the first no larger."""
    benign = draw(st.integers(1, 2_000))
    fewer = draw(st.integers(0, benign))
    return benign, fewer, draw(st.integers(fewer, benign))


@hypothesis_settings(max_examples=examples(200))
@given(canary_fps(), canary_fps())
def test_more_canary_fps_never_turn_a_failing_candidate_into_a_passing_one(
    candidate: tuple[int, int, int], incumbent: tuple[int, int, int]
) -> None:
    benign, fewer, more = candidate

    def outcome(fps: int) -> str:
        counts = both(
            HEALTHY | {"canary_benign": benign, "canary_fp": fps},
            HEALTHY | {"canary_benign": incumbent[0], "canary_fp": incumbent[1]},
        )
        return outcomes(run_compare(at_stage(), counts))["canary_fp_rate"]

    assert outcome(fewer) != "fail" or outcome(more) == "fail"


def test_a_candidate_that_looks_worse_on_few_samples_holds_the_stage_until_they_show_it() -> None:
    """10 of 40 benign canaries flagged against none of 40: not beyond the 99.9 % bounds, but
    outside the incumbent's band, so the stage neither advances nor rolls back; the same
    rate on ten times the probes rolls it back."""
    few = HEALTHY | {"canary_benign": 40, "canary_fp": 10}
    clean = HEALTHY | {"canary_benign": 40, "canary_fp": 0}
    assert outcomes(run_compare(at_stage(), both(few, clean)))["canary_fp_rate"] == "wait"
    more = HEALTHY | {"canary_benign": 400, "canary_fp": 100}
    cleaner = HEALTHY | {"canary_benign": 400, "canary_fp": 0}
    assert outcomes(run_compare(at_stage(), both(more, cleaner)))["canary_fp_rate"] == "fail"
