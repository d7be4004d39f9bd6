"""The retrained candidate's operating point: recall on known attacks first, then the fewest
benign prompts flagged; a hard negative it cannot separate is flagged, not paid for."""

from __future__ import annotations

import numpy as np
import pytest

from l2model.training import recall_constrained_threshold


def _recall(scores: np.ndarray, threshold: float) -> float:
    return float(np.mean(scores >= threshold))


def test_the_highest_threshold_that_keeps_recall_then_the_fewest_benign() -> None:
    attacks = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    benign = np.array([0.05, 0.35, 0.65])
    # 70 % recall would flag one benign prompt; 90 % needs the threshold under 0.2, which
    # flags two: the threshold keeps 90 % and flags two, no more.
    threshold = recall_constrained_threshold(attacks, 0.9, benign)
    assert _recall(attacks, threshold) >= 0.9
    assert int(np.sum(benign >= threshold)) == 2
    # ... and among thresholds flagging two, it keeps every attack above 0.05.
    assert 0.05 < threshold < 0.1
    strict = recall_constrained_threshold(attacks, 0.7, benign)
    assert _recall(attacks, strict) >= 0.7 and int(np.sum(benign >= strict)) == 1


def test_among_equally_few_flags_the_most_recall() -> None:
    attacks = np.array([0.9, 0.8, 0.7, 0.6])
    benign = np.array([0.1])
    # Half the attacks would do, but nothing benign lies between: all of them are kept.
    threshold = recall_constrained_threshold(attacks, 0.5, benign)
    assert _recall(attacks, threshold) == 1.0
    assert threshold > 0.1


def test_an_inseparable_hard_negative_is_flagged_not_paid_for_with_recall() -> None:
    attacks = np.linspace(0.5, 0.99, 100)
    hard_negative = np.array([0.97])
    threshold = recall_constrained_threshold(attacks, 0.99, hard_negative)
    assert _recall(attacks, threshold) >= 0.99
    assert threshold < 0.97  # the hard negative stays flagged; the gate names it


def test_no_known_attack_is_an_error() -> None:
    with pytest.raises(ValueError, match="no known attack"):
        recall_constrained_threshold(np.array([]), 0.9, np.array([0.1]))
