"""The rollout record: the stages an operator may ask for, and what a run's state says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from l2loop.schemas.rollout import (
    SHADOW,
    RolloutStatus,
    StageRecord,
    parse_stages,
    stage_percent,
)
from tests.fixtures.rollout_records import START, make_rollout
from tests.fixtures.strategies import examples


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        ("shadow,10,50,100", ["shadow", "10", "50", "100"]),
        ("100", ["100"]),
        ("shadow,100", ["shadow", "100"]),
        ("1,2,99,100", ["1", "2", "99", "100"]),
        # Operators type these by hand: blanks around and between parts are not stages.
        (" shadow , 25 ,, 100 ", ["shadow", "25", "100"]),
    ],
)
def test_valid_stages_parse_to_their_list(text: str, stages: list[str]) -> None:
    assert parse_stages(text) == stages


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "end at 100"),
        ("shadow", "end at 100"),
        ("shadow,10,50", "end at 100"),
        ("100,shadow", "end at 100"),
        ("10,shadow,100", "shadow can only be the first"),
        ("shadow,shadow,100", "shadow can only be the first"),
        ("50,10,100", "must rise"),
        ("shadow,50,50,100", "must rise"),
        ("100,100", "must rise"),
        ("0,100", "whole percentage"),
        ("shadow,101", "whole percentage"),
        ("shadow,010,100", "whole percentage"),
        ("shadow,+10,100", "whole percentage"),
        ("shadow,10.5,100", "whole percentage"),
        ("shadow,10%,100", "whole percentage"),
        ("Shadow,100", "whole percentage"),
        ("shadow,-5,100", "whole percentage"),
        # Digits int() reads, or refuses, that are not how anyone writes a percentage.
        ("shadow,\u0661\u0660,100", "whole percentage"),
        ("shadow,\u00b2,100", "whole percentage"),
    ],
)
def test_invalid_stages_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_stages(text)


# One token, never blank around: unicode digits and padded numbers among them.
tokens = st.one_of(
    st.text(
        st.characters(blacklist_characters=",", blacklist_categories=("Z", "Cc")),
        min_size=1,
        max_size=6,
    ),
    st.integers(-5, 205).map(str),
    st.sampled_from(["shadow", "SHADOW", "010", "1e1", "\u00b2", "\u0661\u0660", "\uff15"]),
)


@hypothesis_settings(max_examples=examples(300))
@given(tokens)
def test_a_stage_token_is_shadow_or_a_canonical_percentage(token: str) -> None:
    """A token before 100 parses exactly when it is ``shadow`` or a whole percentage below
    100 written as ``str(int)`` writes it; anything else is refused saying what a stage is
    (100 itself, because the stages must rise)."""
    if token == SHADOW or token in {str(p) for p in range(1, 100)}:
        assert parse_stages(f"{token},100") == [token, "100"]
    else:
        why = "must rise" if token == "100" else "a stage is 'shadow' or a whole percentage"
        with pytest.raises(ValueError, match=why):
            parse_stages(f"{token},100")


@hypothesis_settings(max_examples=examples(100))
@given(st.sets(st.integers(1, 99), max_size=6), st.booleans())
def test_any_rising_percentages_ending_at_100_parse(percents: set[int], shadow: bool) -> None:
    stages = ([SHADOW] if shadow else []) + [str(p) for p in sorted(percents)] + ["100"]
    assert parse_stages(",".join(stages)) == stages


def test_stage_percent_is_zero_in_shadow_and_the_number_otherwise() -> None:
    assert stage_percent(SHADOW) == 0
    assert stage_percent("10") == 10
    assert stage_percent("100") == 100


def test_the_record_refuses_a_stage_that_does_not_parse() -> None:
    with pytest.raises(ValueError, match="whole percentage"):
        make_rollout(["shadow", "10.0", "100"])


@pytest.mark.parametrize(
    ("index", "stage", "percent"),
    [(0, "shadow", 0), (1, "10", 10), (2, "50", 50), (3, "100", 100)],
)
def test_stage_and_percent_follow_the_stage_index(index: int, stage: str, percent: int) -> None:
    run = make_rollout(["shadow", "10", "50", "100"], stage_index=index)
    assert (run.stage, run.percent) == (stage, percent)


@pytest.mark.parametrize(
    ("status", "active"),
    [
        ("running", True),
        ("paused", True),
        ("completed", False),
        ("rolled_back", False),
        ("aborted", False),
    ],
)
def test_only_running_and_paused_runs_are_active(status: RolloutStatus, active: bool) -> None:
    assert make_rollout(["shadow", "100"], status=status).active is active


def record(stage: str, outcome: str) -> StageRecord:
    return StageRecord.model_validate(
        {
            "stage": stage,
            "started_at": START,
            "ended_at": START,
            "outcome": outcome,
            "by": "analysis",
        }
    )


def test_promoted_once_the_run_is_at_100() -> None:
    stages = ["shadow", "10", "100"]
    assert not make_rollout(stages, stage_index=0).promoted
    assert not make_rollout(stages, stage_index=1).promoted
    assert make_rollout(stages, stage_index=2).promoted


def test_a_run_rolled_back_at_100_was_promoted_and_one_rolled_back_before_was_not() -> None:
    """Whoever settles a rolled-back run restores the pointer only if the candidate had been
    made the model in service."""
    stages = ["shadow", "10", "100"]
    at_100 = [record("shadow", "advanced"), record("10", "advanced"), record("100", "rolled_back")]
    at_10 = [record("shadow", "advanced"), record("10", "rolled_back")]
    assert make_rollout(stages, stage_index=2, status="rolled_back", history=at_100).promoted
    assert not make_rollout(stages, stage_index=1, status="rolled_back", history=at_10).promoted
