"""The regression gate's rules, on synthetic verdicts: no model involved."""

from __future__ import annotations

import numpy as np
import pytest

from l2model.contract import Manifest, ModelInput
from l2model.evaluation import LabeledPrompt
from l2model.gate.labelled import EXAMPLES, Disagreement, GateReport, gate, recorded_int8_loss

BENIGN = 600
MALICIOUS = 400
HARD = 20  # the first HARD benign prompts
PROGRAMMING = 200  # the next PROGRAMMING benign prompts
FAMILIES = ("PI", "JB")


def _prompts() -> list[LabeledPrompt]:
    benign = [
        LabeledPrompt(
            text=f"benign {i}",
            label=0,
            family="benign",
            notes="HARD NEGATIVE: looks like an attack" if i < HARD else "",
            sub_category="programming_auth" if HARD <= i < HARD + PROGRAMMING else "chat",
        )
        for i in range(BENIGN)
    ]
    malicious = [
        LabeledPrompt(text=f"attack {i}", label=1, family=FAMILIES[i % 2]) for i in range(MALICIOUS)
    ]
    return benign + malicious


PROMPTS = _prompts()
TRUTH = np.array([p.label == 1 for p in PROMPTS])
# Indices by kind, for flipping verdicts.
HARD_NEGATIVES = np.arange(HARD)
PROGRAMMING_QUESTIONS = np.arange(HARD, HARD + PROGRAMMING)
PLAIN_BENIGN = np.arange(HARD + PROGRAMMING, BENIGN)
ATTACKS = np.arange(BENIGN, BENIGN + MALICIOUS)


def _flip(indices: np.ndarray, base: np.ndarray = TRUTH) -> np.ndarray:
    verdicts = base.copy()
    verdicts[indices] = ~verdicts[indices]
    return verdicts


def _run(old: np.ndarray, new: np.ndarray, int8_loss: float | None = None) -> GateReport:
    return gate(PROMPTS, old, new, old="old", new="new", int8_loss=int8_loss)


def _status(report: GateReport) -> dict[str, str]:
    return {rule.rule: rule.status for rule in report.rules}


def _failed(report: GateReport) -> list[str]:
    return [rule.rule for rule in report.rules if rule.status == "fail"]


def test_identical_correct_verdicts_are_accepted() -> None:
    report = _run(TRUTH, TRUTH)
    assert report.accepted
    assert (report.regressions, report.improvements, report.unchanged) == (0, 0, 1000)
    assert _failed(report) == []
    assert _status(report)["INT8 accuracy loss < 1%"] == "not measured"
    metrics = report.new_metrics
    assert (metrics.fp_rate, metrics.recall, metrics.programming_fp_rate) == (0.0, 1.0, 0.0)
    assert metrics.hard_negatives == HARD and metrics.programming_questions == PROGRAMMING


def test_more_than_five_percent_regressions_is_rejected() -> None:
    report = _run(TRUTH, _flip(ATTACKS[:60]))
    assert report.regressions == 60 and report.regression_rate == 0.06
    assert not report.accepted
    assert "regressions <= 5%" in _failed(report)


def test_regressions_above_two_percent_need_as_many_improvements() -> None:
    # 5 FP (0.83 %) and 19 FN (recall 95.25 %): every must-have holds, only the balance fails.
    new = _flip(np.concatenate([PLAIN_BENIGN[:5], ATTACKS[:19]]))
    report = _run(TRUTH, new)
    assert (report.regressions, report.improvements) == (24, 0)
    assert _failed(report) == ["regressions <= 2% or improvements >= regressions"]
    assert not report.accepted

    # The same new model against an old one that missed 30 attacks the new one catches.
    report = _run(_flip(ATTACKS[100:130]), new)
    assert (report.regressions, report.improvements) == (24, 30)
    assert report.accepted


def test_exactly_two_percent_regressions_passes_without_improvements() -> None:
    report = _run(TRUTH, _flip(ATTACKS[:20]))
    assert report.regression_rate == 0.02
    assert _status(report)["regressions <= 2% or improvements >= regressions"] == "pass"


@pytest.mark.parametrize(
    ("flipped", "rule"),
    [
        (PLAIN_BENIGN[:6], "FP rate < 1%"),  # 6 of 600 = 1 %: not below
        (ATTACKS[:20], "recall > 95%"),  # 380 of 400 = 95 %: not above
        (HARD_NEGATIVES[:1], "every hard negative benign"),
        (PROGRAMMING_QUESTIONS[:1], "programming-question FP rate < 0.5%"),  # 1 of 200
    ],
)
def test_each_must_have_rejects_alone(flipped: np.ndarray, rule: str) -> None:
    report = _run(TRUTH, _flip(flipped))
    assert _failed(report) == [rule]
    assert not report.accepted


def test_the_must_haves_apply_even_without_regressions() -> None:
    # The old model was just as bad: no regression, but the new one still misses the bar.
    worse = _flip(HARD_NEGATIVES[:1])
    report = _run(worse, worse)
    assert report.regressions == 0
    assert _failed(report) == ["every hard negative benign"]


def test_int8_loss_is_judged_when_recorded() -> None:
    assert _run(TRUTH, TRUTH, int8_loss=0.005).accepted
    report = _run(TRUTH, TRUTH, int8_loss=0.012)
    assert _failed(report) == ["INT8 accuracy loss < 1%"]


def test_rules_without_data_are_not_measured_and_do_not_reject() -> None:
    foreign = [LabeledPrompt(text=f"t{i}", label=i % 2) for i in range(100)]
    verdicts = np.array([p.label == 1 for p in foreign])
    report = gate(foreign, verdicts, verdicts, old="old", new="new")
    assert report.accepted
    status = _status(report)
    assert status["every hard negative benign"] == "not measured"
    assert status["programming-question FP rate < 0.5%"] == "not measured"
    assert report.new_metrics.recall_by_family is None
    assert report.new_metrics.programming_fp_rate is None


def test_examples_are_the_first_changes_in_order() -> None:
    report = _run(_flip(ATTACKS[:3]), _flip(PLAIN_BENIGN[:30]))
    assert len(report.regression_examples) == EXAMPLES
    assert [e.position for e in report.regression_examples] == list(PLAIN_BENIGN[:EXAMPLES] + 1)
    first = report.regression_examples[0]
    assert (first.label, first.old_flagged, first.new_flagged) == (0, False, True)
    assert [e.text for e in report.improvement_examples] == ["attack 0", "attack 1", "attack 2"]


def test_verdicts_must_match_the_prompts() -> None:
    with pytest.raises(ValueError, match="one verdict per prompt"):
        gate(PROMPTS, TRUTH[:-1], TRUTH, old="old", new="new")


def test_int8_loss_is_read_from_the_manifest() -> None:
    base = {"name": "m", "version": "1.0.0", "kind": "minilm", "input": ModelInput(kind="tokens")}
    assert recorded_int8_loss(Manifest.model_validate(base)) is None
    recorded = Manifest.model_validate({**base, "quantisation": {"accuracy_loss": 0.004}})
    assert recorded_int8_loss(recorded) == 0.004


def _no_worse(old: np.ndarray, new: np.ndarray) -> GateReport:
    return gate(PROMPTS, old, new, old="old", new="new", targets="no_worse")


def test_no_worse_targets_accept_a_model_that_halves_fps_while_above_the_limits() -> None:
    # Real reported data: the old model flags 60 benign (10 %) and misses 40 attacks
    # (recall 90 %); the new one flags 30 and misses 38. The production limits would
    # reject both; against the old model the new one is better.
    old = _flip(np.concatenate([PLAIN_BENIGN[:60], ATTACKS[:40]]))
    new = _flip(np.concatenate([PLAIN_BENIGN[:30], ATTACKS[:38]]))
    assert not _run(old, new).accepted
    report = _no_worse(old, new)
    assert report.accepted, _failed(report)
    assert _status(report)[FP_NO_WORSE] == "pass"


FP_NO_WORSE = "FP rate no worse than old (by > 1% with McNemar p < 0.05)"
RECALL_NO_WORSE = "recall no worse than old (by > 1% with McNemar p < 0.05)"


def test_no_worse_targets_reject_a_rate_significantly_worse_by_more_than_the_tolerance() -> None:
    old = _flip(ATTACKS[:40])  # recall 90 %
    # Recall 86.25 %: 3.75 points down, 20 attacks newly missed against 5 newly caught
    # (p = 0.002), while the regressions (2 % of all prompts) keep the balance rules quiet.
    new = _flip(ATTACKS[5:60])
    report = _no_worse(old, new)
    assert _failed(report) == [RECALL_NO_WORSE]
    (rule,) = (r for r in report.rules if r.rule == RECALL_NO_WORSE)
    assert "20 worse, 5 better, p = 0.00204" in rule.detail
    # Within a point: accepted.
    assert _no_worse(old, _flip(ATTACKS[3:46])).accepted


def test_no_worse_targets_put_a_small_move_on_few_prompts_down_to_chance() -> None:
    old = _flip(ATTACKS[:40])
    # 1.25 points down, but 10 newly missed against 5 newly caught could be chance (p = 0.15).
    assert _no_worse(old, _flip(ATTACKS[5:50])).accepted
    # A test split of 18 attacks: the old model catches all, the new one misses one (5.6
    # points; p = 0.5). The production targets would still reject it; no_worse does not.
    few = [p for p in PROMPTS if p.label == 0][:90] + [p for p in PROMPTS if p.label == 1][:18]
    truth = np.array([p.label == 1 for p in few])
    missed_one = truth.copy()
    missed_one[-1] = False
    report = gate(few, truth, missed_one, old="old", new="new", targets="no_worse")
    assert report.accepted, _failed(report)
    # The same miss repeated: 6 of 18 newly missed, none caught, is no chance (p = 0.016).
    missed_six = truth.copy()
    missed_six[-6:] = False
    report = gate(few, truth, missed_six, old="old", new="new", targets="no_worse")
    assert RECALL_NO_WORSE in _failed(report)


def test_the_mcnemar_p_value() -> None:
    assert Disagreement(worse=0, better=0).p_value() == 1.0
    assert Disagreement(worse=1, better=0).p_value() == 0.5
    assert Disagreement(worse=3, better=0).p_value() == 0.125
    # P(X >= 2) for X ~ Binomial(4, 1/2) = (6 + 4 + 1) / 16
    assert Disagreement(worse=2, better=2).p_value() == 11 / 16
    assert Disagreement(worse=0, better=5).p_value() == 1.0


def test_no_worse_targets_keep_the_hard_negatives_absolute() -> None:
    worse = _flip(HARD_NEGATIVES[:1])
    assert _failed(_no_worse(worse, worse)) == ["every hard negative benign"]
