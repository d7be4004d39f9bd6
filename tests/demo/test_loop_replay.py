"""The loop replay's pure parts: the halves and the simulated reports."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from l2loop.demo.loop_replay import (
    SimulatedReports,
    analyst_family,
    at_most,
    draw_reports,
    sample_prompts,
    simulate_reports,
    split_halves,
    stratum,
)
from l2loop.streams.defences.rules import ONE_VOICE, RELEASED
from l2model.evaluation import LabeledPrompt
from l2model.golden import load_golden

SOURCES = ("org/a:x.json", "org/b:y.json")


def _prompts() -> list[LabeledPrompt]:
    prompts = []
    for i in range(403):
        label = int(i % 3 == 0)
        prompts.append(
            LabeledPrompt(
                text=f"prompt number {i} about topic {i * 7 % 11}",
                label=label,
                source=SOURCES[i % 2],
                category=None if label else f"cat{i % 5}",
                family=f"cyberseceval_pi/direct/x{i % 4}" if label else None,
            )
        )
    return prompts


def test_halves_are_stratified_disjoint_and_complete() -> None:
    prompts = _prompts()
    replayed, held = split_halves(prompts, seed=3)
    assert sorted(p.text for p in replayed + held) == sorted(p.text for p in prompts)
    assert not {p.text for p in replayed} & {p.text for p in held}
    whole = Counter(stratum(p) for p in prompts)
    first = Counter(stratum(p) for p in replayed)
    second = Counter(stratum(p) for p in held)
    for key, count in whole.items():
        # Each stratum halves, the odd prompt going to the replayed half.
        assert first[key] == (count + 1) // 2 and second[key] == count // 2


def test_halves_are_deterministic_order_free_and_seeded() -> None:
    prompts = _prompts()
    replayed, _ = split_halves(prompts, seed=3)
    again, _ = split_halves(list(reversed(prompts)), seed=3)
    other, _ = split_halves(prompts, seed=4)
    assert {p.text for p in replayed} == {p.text for p in again}
    assert {p.text for p in replayed} != {p.text for p in other}


def test_a_repeated_text_stays_in_one_half() -> None:
    prompts = _prompts()
    twin = prompts[10].model_copy(update={"text": prompts[10].text.upper() + "  "})
    replayed, held = split_halves([*prompts, twin], seed=0)
    halves = [half for half in (replayed, held) if any(p.text == twin.text for p in half)]
    assert len(halves) == 1 and any(p.text == prompts[10].text for p in halves[0])


def _scores(prompts: list[LabeledPrompt]) -> np.ndarray:
    # Benign prompts with an even number scored high (false positives), malicious ones
    # with an odd number low (misses); the FP scores straddle the quarantine bar.
    scores = []
    for i, p in enumerate(prompts):
        if p.label == 0:
            scores.append((0.6 if i % 4 else 0.95) if i % 2 == 0 else 0.1)
        else:
            scores.append(0.2 if i % 2 else 0.9)
    return np.array(scores)


def test_reports_take_the_share_of_errors_with_the_report_paths_weights() -> None:
    prompts = _prompts()
    scores = _scores(prompts)
    labels = np.array([p.label for p in prompts])
    fps = int(np.sum((scores >= 0.5) & (labels == 0)))
    misses = int(np.sum((scores < 0.5) & (labels == 1)))
    result = simulate_reports(
        prompts,
        scores,
        0.5,
        share=0.3,
        seed=1,
        high_confidence_score=0.9,
        model_version="1.0.0",
    )
    assert (result.false_positives, result.misses) == (fps, misses)
    assert (result.fp_reported, result.fn_reported) == (round(0.3 * fps), round(0.3 * misses))
    benign = [r for r in result.examples if r.label == 0]
    attacks = [r for r in result.examples if r.label == 1]
    # FP reports on a score at or above the bar wait for a review that never comes.
    assert result.quarantined > 0
    assert len(benign) + result.quarantined == result.fp_reported
    assert len(attacks) == result.fn_reported
    assert {(r.weight_multiplier, r.confidence) for r in result.examples} == {
        (ONE_VOICE.weight, ONE_VOICE.confidence)
    }
    assert {r.family for r in attacks} == {"PI"}
    reported_texts = {r.text for r in result.examples}
    by_text = {p.text: (p, s) for p, s in zip(prompts, scores, strict=True)}
    for text in reported_texts:
        prompt, score = by_text[text]
        assert (score >= 0.5) != bool(prompt.label)  # every report is of an error


def test_a_reviewer_releases_a_share_of_the_quarantined_reports_at_a_release_weight() -> None:
    prompts = _prompts()
    scores = _scores(prompts)

    def reports(review_share: float) -> SimulatedReports:
        return simulate_reports(
            prompts,
            scores,
            0.5,
            share=0.5,
            seed=1,
            high_confidence_score=0.9,
            model_version="1.0.0",
            review_share=review_share,
        )

    unreviewed, half, everything = reports(0.0), reports(0.5), reports(1.0)
    held = unreviewed.quarantined
    assert held > 2 and unreviewed.released == 0
    assert (half.quarantined, half.released) == (held, at_most(0.5, held))
    assert (everything.quarantined, everything.released) == (held, held)
    # Released reports are the only additions, benign, at the weight of a release.
    for result in (half, everything):
        added = [r for r in result.examples if r not in unreviewed.examples]
        assert len(added) == result.released == len(result.examples) - len(unreviewed.examples)
        assert {(r.label, r.weight_multiplier, r.confidence) for r in added} == {
            (0, RELEASED.weight, RELEASED.confidence)
        }
        assert all(r.notes.endswith("released in review") for r in added)
    assert {r.text for r in half.examples} < {r.text for r in everything.examples}
    assert half == reports(0.5)


def test_at_most_a_share_is_never_more_than_the_share() -> None:
    assert at_most(0.29, 100) == 29  # 28.999... as a product
    assert [at_most(0.5, n) for n in (0, 1, 2, 3)] == [0, 0, 1, 1]
    assert at_most(1.0, 7) == 7


def test_reports_are_seeded() -> None:
    prompts = _prompts()
    scores = _scores(prompts)

    def texts(seed: int) -> set[str]:
        result = simulate_reports(
            prompts,
            scores,
            0.5,
            share=0.3,
            seed=seed,
            high_confidence_score=0.99,
            model_version="1.0.0",
        )
        return {r.text for r in result.examples}

    assert texts(5) == texts(5)
    assert texts(5) != texts(6)


def test_golden_texts_are_never_reported() -> None:
    probe = next(p for p in load_golden().probes if p.label == 0)
    prompts = [LabeledPrompt(text=probe.text, label=0)]
    result = simulate_reports(
        prompts,
        np.array([0.6]),
        0.5,
        share=1.0,
        seed=0,
        high_confidence_score=0.9,
        model_version="1.0.0",
    )
    assert (result.golden_refused, result.examples) == (1, [])


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("interpreter_abuse/Container Escape", "CMD"),
        ("cyberseceval_pi/indirect/persuasion", "PI"),
        ("dan_template", "JB"),
        ("autodan_template", "JB"),
        (None, "PI"),
    ],
)
def test_analysts_name_a_family(family: str | None, expected: str) -> None:
    assert analyst_family(LabeledPrompt(text="x", label=1, family=family)) == expected


def test_a_sample_keeps_every_strata_share_and_is_seeded() -> None:
    prompts = _prompts()
    sample = sample_prompts(prompts, 100, seed=2)
    assert len(sample) == 100
    assert len({p.text for p in sample}) == 100 and {p.text for p in sample} <= {
        p.text for p in prompts
    }
    whole, part = Counter(stratum(p) for p in prompts), Counter(stratum(p) for p in sample)
    for key, count in whole.items():
        # Each stratum's share, rounded one way or the other.
        assert abs(part[key] - 100 * count / len(prompts)) < 1
    # The file's order is kept; the seed chooses which prompts.
    order = {p.text: i for i, p in enumerate(prompts)}
    assert [order[p.text] for p in sample] == sorted(order[p.text] for p in sample)
    reordered = sample_prompts(list(reversed(prompts)), 100, seed=2)
    assert {p.text for p in reordered} == {p.text for p in sample}
    assert {p.text for p in sample} != {p.text for p in sample_prompts(prompts, 100, seed=3)}
    assert sample_prompts(prompts, 1000, seed=2) == prompts


def test_the_draw_takes_the_share_of_each_kind_of_error() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    flagged = np.array([True] * 6 + [False] * 4 + [True] * 3 + [False] * 7)
    drawn = draw_reports(labels, flagged, share=0.5, seed=0)
    assert (drawn.false_positives, drawn.misses) == (6, 7)
    assert len(drawn.fp) == 3 and set(drawn.fp) <= set(range(6))
    assert len(drawn.fn) == round(3.5) and set(drawn.fn) <= set(range(13, 20))
    assert drawn == draw_reports(labels, flagged, share=0.5, seed=0)
