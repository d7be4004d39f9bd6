from __future__ import annotations

import numpy as np
import pytest

from l2model.artifacts import default_model_dir
from l2model.evaluation import choose_threshold, evaluate_external, threat_scores
from tests.fixtures.paths import EXTERNAL_EVAL

EXTERNAL = EXTERNAL_EVAL


def _scores(benign: list[float], malicious: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0] * len(benign) + [1] * len(malicious)), np.array(benign + malicious)


def test_threshold_sits_between_the_classes_when_they_separate() -> None:
    labels, scores = _scores([0.01, 0.1, 0.2], [0.7, 0.9])
    threshold = choose_threshold(labels, scores, np.zeros(5, dtype=bool))
    assert 0.2 < threshold < 0.7


def test_threshold_spends_the_fp_budget_only_for_recall() -> None:
    # 200 benign: fewer than 1 % flagged means at most one.
    benign = [i / 1000 for i in range(199)] + [0.95]
    labels, scores = _scores(benign, [0.5, 0.6, 0.99])
    threshold = choose_threshold(labels, scores, np.zeros(len(scores), dtype=bool))
    flagged = scores >= threshold
    assert flagged[labels == 1].all()
    assert flagged[labels == 0].sum() == 1
    # Two benign above every threat: recall must give way.
    labels, scores = _scores([*benign[:-2], 0.95, 0.96], [0.5, 0.99])
    threshold = choose_threshold(labels, scores, np.zeros(len(scores), dtype=bool))
    assert 0.96 < threshold < 0.99


def test_threshold_never_flags_a_hard_negative() -> None:
    labels, scores = _scores([0.1] * 300 + [0.8], [0.6, 0.9])
    hard = np.zeros(len(scores), dtype=bool)
    hard[300] = True
    assert 0.8 < choose_threshold(labels, scores, hard) < 0.9


def test_threat_scores_is_softmax_of_the_binary_logits() -> None:
    logits = np.array([[0.0, 0.0], [0.0, 50.0], [0.0, -800.0], [1.0, 3.0]], dtype=np.float32)
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(threat_scores(logits), np.nan_to_num(expected), atol=1e-7)


@pytest.mark.skipif(not EXTERNAL.exists(), reason="external evaluation file absent")
def test_external_report_counts_every_prompt() -> None:
    report = evaluate_external(default_model_dir(), EXTERNAL)
    overall = report["overall"]
    assert isinstance(overall, dict)
    assert overall["benign"] + overall["malicious"] == sum(1 for _ in EXTERNAL.open("rb"))
    assert 0.0 <= overall["fp_rate"] <= 1.0 and 0.0 <= overall["recall"] <= 1.0


def test_threshold_stays_above_hard_negatives_outside_the_validation_split() -> None:
    labels, scores = _scores([0.1] * 300, [0.6, 0.9])
    none = np.zeros(len(scores), dtype=bool)
    assert choose_threshold(labels, scores, none) < 0.6
    threshold = choose_threshold(labels, scores, none, other_hard_negative_scores=np.array([0.7]))
    assert 0.7 < threshold < 0.9
