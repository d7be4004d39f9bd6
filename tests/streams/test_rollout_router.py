"""Which model makes an event's acting verdict at each stage: a salted hash every worker
computes alike, monotone in the stage, with the canary's probes split half and half."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from l2loop.schemas.events import ScanEvent
from l2loop.schemas.rollout import HashBy
from l2loop.streams.rollout_router import BUCKETS, Plan, bucket
from l2model.artifacts import default_model_dir
from l2model.runtime import L2Model
from tests.fixtures.rollout_records import START, make_rollout
from tests.fixtures.strategies import examples

CANARY = "l2loop-canary"
STAGES = ["shadow", "10", "50", "100"]
TENANTS = [f"tenant-{i:04d}" for i in range(2_000)]


@pytest.fixture(scope="module")
def model() -> L2Model:
    # The plan holds the loaded candidate; which model it is plays no part in the split.
    return L2Model.load(default_model_dir())


def plan(model: L2Model, stage: str, *, run_id: str = "run-1", hash_by: HashBy = "tenant") -> Plan:
    stages = [stage] if stage == "100" else [stage, "100"]
    return Plan(make_rollout(stages, run_id=run_id, hash_by=hash_by), model)


def scan(tenant: str, event_id: str) -> ScanEvent:
    return ScanEvent(event_id=event_id, ts=START, tenant_id=tenant, text="hello")


def share(picks: list[bool]) -> float:
    return sum(picks) / len(picks)


def test_a_bucket_is_the_same_for_the_same_salt_and_key_and_in_range() -> None:
    assert bucket("run-1", "acme") == bucket("run-1", "acme")
    assert all(0 <= bucket("run-1", tenant) < BUCKETS for tenant in TENANTS)


def test_buckets_spread_evenly_over_their_range() -> None:
    tenths = Counter(bucket("run-1", f"key-{i}") * 10 // BUCKETS for i in range(20_000))
    # 2,000 expected per tenth; ±10 % is over 7 standard deviations.
    assert sorted(tenths) == list(range(10))
    assert all(1_800 <= count <= 2_200 for count in tenths.values())


def test_the_salt_reshuffles_the_buckets() -> None:
    """Each run draws its own tenants: the same ones are not always the first exposed."""
    first = {tenant for tenant in TENANTS if bucket("run-1", tenant) < BUCKETS // 10}
    second = {tenant for tenant in TENANTS if bucket("run-2", tenant) < BUCKETS // 10}
    assert len(first & second) < len(first) // 2


def test_salt_and_key_do_not_run_together() -> None:
    """("run-1", "0acme") and ("run-10", "acme") are different tenants of different runs."""
    assert bucket("run-1", "0acme") != bucket("run-10", "acme")


def test_shadow_never_sends_an_acting_verdict_to_the_candidate(model: L2Model) -> None:
    shadow = plan(model, "shadow")
    events = [scan(tenant, f"ev-{i}") for i, tenant in enumerate(TENANTS)]
    events += [scan(CANARY, f"probe-{i}") for i in range(200)]
    assert not any(shadow.to_candidate(event, CANARY) for event in events)
    assert shadow.shadow


def test_100_sends_every_acting_verdict_to_the_candidate(model: L2Model) -> None:
    full = plan(model, "100")
    events = [scan(tenant, f"ev-{i}") for i, tenant in enumerate(TENANTS)]
    events += [scan(CANARY, f"probe-{i}") for i in range(200)]
    assert all(full.to_candidate(event, CANARY) for event in events)
    assert not full.shadow


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_the_candidates_share_of_tenants_is_close_to_the_stage(
    model: L2Model, percent: int
) -> None:
    stage = plan(model, str(percent))
    picks = [stage.to_candidate(scan(tenant, "ev-1"), CANARY) for tenant in TENANTS]
    # Binomial over 2,000 tenants: 3 percentage points is over 3 standard deviations at 50 %.
    assert share(picks) == pytest.approx(percent / 100, abs=0.03)


def test_a_tenant_sent_to_the_candidate_stays_with_it_as_the_stage_grows(model: L2Model) -> None:
    """Hashing by tenant: a tenant never sees its verdicts go back and forth between models."""
    chosen = {
        stage: {t for t in TENANTS if plan(model, stage).to_candidate(scan(t, "ev-1"), CANARY)}
        for stage in ("10", "50", "100")
    }
    assert chosen["10"]
    assert chosen["10"] < chosen["50"] < chosen["100"]
    assert chosen["100"] == set(TENANTS)


def test_hashing_by_tenant_keeps_all_of_a_tenants_events_together(model: L2Model) -> None:
    stage = plan(model, "50")
    for tenant in TENANTS[:50]:
        picks = {stage.to_candidate(scan(tenant, f"ev-{i}"), CANARY) for i in range(40)}
        assert len(picks) == 1


def test_every_worker_makes_the_same_split(model: L2Model) -> None:
    """Two workers build their plans from the same record, separately."""
    one, other = plan(model, "10"), plan(model, "10")
    assert [one.to_candidate(scan(t, "ev"), CANARY) for t in TENANTS] == [
        other.to_candidate(scan(t, "ev"), CANARY) for t in TENANTS
    ]


def test_hashing_by_event_splits_one_tenants_events(model: L2Model) -> None:
    stage = plan(model, "10", hash_by="event")
    picks = [stage.to_candidate(scan("acme", f"ev-{i}"), CANARY) for i in range(5_000)]
    assert share(picks) == pytest.approx(0.10, abs=0.015)
    # And monotone per event, as per tenant.
    later = plan(model, "50", hash_by="event")
    assert all(
        later.to_candidate(scan("acme", f"ev-{i}"), CANARY)
        for i, picked in enumerate(picks)
        if picked
    )


@pytest.mark.parametrize("percent", ["1", "10", "90"])
def test_canary_probes_are_split_half_and_half_by_event_at_a_partial_stage(
    model: L2Model, percent: str
) -> None:
    """Both models are measured on the canary's probes whatever the stage."""
    stage = plan(model, percent)
    picks = [stage.to_candidate(scan(CANARY, f"probe-{i}"), CANARY) for i in range(5_000)]
    assert share(picks) == pytest.approx(0.5, abs=0.03)


ids = st.from_regex(r"[0-9A-Za-z._:-]{1,24}", fullmatch=True)


@hypothesis_settings(max_examples=examples(200))
@given(
    st.from_regex(r"[0-9A-Za-z._-]{1,64}", fullmatch=True),
    ids,
    ids,
    st.sampled_from(["tenant", "event"]),
    st.lists(st.integers(1, 100), min_size=2, max_size=2, unique=True).map(sorted),
)
def test_to_the_candidate_at_one_stage_means_to_it_at_every_later_stage(
    model: L2Model, run_id: str, tenant: str, event_id: str, hash_by: HashBy, percents: list[int]
) -> None:
    """For any run, tenant, event and pair of stages: once the candidate's, always."""
    low, high = (plan(model, str(percent), run_id=run_id, hash_by=hash_by) for percent in percents)
    event = scan(tenant, event_id)
    assert not low.to_candidate(event, CANARY) or high.to_candidate(event, CANARY)
