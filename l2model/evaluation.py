"""Metrics the gate and the manifest report, and the threshold choice they depend on.

Flagged means ``score >= threshold``, as the scorer decides ``is_threat``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from l2model.corpus.benign import PROGRAMMING_PREFIX
from l2model.record import TrainingRecord
from l2model.runtime import L2Model

MAX_FP_RATE = 0.01
SCORE_BATCH = 256


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def binary_report(labels: np.ndarray, flagged: np.ndarray) -> dict[str, float | int]:
    benign = labels == 0
    false_positives = int(np.sum(flagged & benign))
    true_positives = int(np.sum(flagged & ~benign))
    return {
        "benign": int(benign.sum()),
        "malicious": int((~benign).sum()),
        "false_positives": false_positives,
        "false_negatives": int(np.sum(~flagged & ~benign)),
        "fp_rate": _rate(false_positives, int(benign.sum())),
        "recall": _rate(true_positives, int((~benign).sum())),
        "precision": _rate(true_positives, int(flagged.sum())),
    }


def corpus_report(
    records: Sequence[TrainingRecord], outputs: dict[str, np.ndarray], threshold: float
) -> dict[str, object]:
    """The acceptance figures of one split, from the graph's outputs on its texts."""
    labels = np.array([r.label for r in records])
    flagged = threat_scores(outputs["binary_logits"]) >= threshold
    hard = np.array([r.is_hard_negative for r in records])
    programming = np.array([r.sub_category.startswith(PROGRAMMING_PREFIX) for r in records])
    families = np.array([r.family_idx for r in records])
    contexts = np.array([r.context_idx for r in records])
    malicious = labels == 1
    family_hits = outputs["family_logits"].argmax(axis=1) == families
    recall_by_family = {
        family: _rate(int(np.sum(flagged & (families == idx))), int(np.sum(families == idx)))
        for idx, family in sorted({(r.family_idx, r.family) for r in records if r.label})
    }
    severity = np.array([r.severity_score for r in records])
    return {
        **binary_report(labels, flagged),
        "hard_negatives": int(hard.sum()),
        "hard_negatives_flagged": int(np.sum(flagged & hard)),
        "programming_questions": int(programming.sum()),
        "programming_fp_rate": _rate(int(np.sum(flagged & programming)), int(programming.sum())),
        "recall_by_family": recall_by_family,
        "family_accuracy_on_malicious": _rate(
            int(np.sum(family_hits & malicious)), int(malicious.sum())
        ),
        "context_accuracy": _rate(
            int(np.sum(outputs["context_logits"].argmax(axis=1) == contexts)), len(records)
        ),
        "severity_mae": round(float(np.abs(outputs["severity"][:, 0] - severity).mean()), 6),
    }


def threat_scores(binary_logits: np.ndarray) -> np.ndarray:
    """P(threat) = softmax(binary_logits)[:, 1], computed without overflow."""
    margin = binary_logits[:, 1].astype(np.float64) - binary_logits[:, 0]
    scores: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * margin))
    return scores


def choose_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    hard_negative: np.ndarray,
    max_fp_rate: float = MAX_FP_RATE,
) -> float:
    """The threshold of highest recall whose FP rate stays below ``max_fp_rate`` and that
    flags no hard negative; among thresholds with that recall, the one that flags the fewest
    benign prompts, placed midway (in logit space) between the nearest benign and malicious
    scores so that both sides keep a margin."""
    benign = np.sort(scores[labels == 0])[::-1]
    malicious = np.sort(scores[labels == 1])
    # The threshold must lie above the benign score ranked just past the budget of flags.
    allowed = math.ceil(max_fp_rate * len(benign)) - 1
    floor = float(benign[allowed]) if 0 <= allowed < len(benign) else -math.inf
    if hard_negative.any():
        floor = max(floor, float(scores[hard_negative].max()))
    caught = malicious[malicious > floor]
    if caught.size == 0:
        raise ValueError("no threshold flags any malicious prompt within the FP budget")
    lowest_caught = float(caught[0])
    below = benign[benign < lowest_caught]
    nearest_benign = max(floor, float(below[0])) if below.size else floor
    return _logit_midpoint(nearest_benign, lowest_caught)


def _logit_midpoint(low: float, high: float) -> float:
    eps = 1e-9

    def logit(p: float) -> float:
        p = min(max(p, eps), 1 - eps)
        return math.log(p / (1 - p))

    if not math.isfinite(low):
        return high / 2
    middle = 1 / (1 + math.exp(-(logit(low) + logit(high)) / 2))
    return min(max(middle, 1e-6), 1 - 1e-6)


class ExternalPrompt(BaseModel):
    """One line of an external evaluation file: only text and label are read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str
    label: int
    source: str = ""
    ambiguous: bool = False


def read_external(path: Path) -> list[ExternalPrompt]:
    with path.open("rb") as lines:
        return [ExternalPrompt.model_validate(orjson.loads(line)) for line in lines if line.strip()]


def external_report(
    prompts: Sequence[ExternalPrompt], scores: np.ndarray, threshold: float
) -> dict[str, object]:
    """Overall figures, then per source repository; ambiguous prompts (attacks whose system
    prompt is missing) are also left out once, since the text alone reads as benign."""
    labels = np.array([p.label for p in prompts])
    flagged = scores >= threshold
    clear = ~np.array([p.ambiguous for p in prompts])
    repos = np.array([p.source.split(":", 1)[0] for p in prompts])
    return {
        "overall": binary_report(labels, flagged),
        "without_ambiguous": binary_report(labels[clear], flagged[clear]),
        "by_source": {
            repo: binary_report(labels[repos == repo], flagged[repos == repo])
            for repo in sorted(Counter(repos.tolist()))
        },
    }


def evaluate_external(model_dir: Path, path: Path) -> dict[str, object]:
    """How a model directory does on an external file it never trained on, scored as in
    production: through the runtime, on the first ``max_chars`` characters."""
    model = L2Model.load(model_dir)
    prompts = read_external(path)
    limit = model.manifest.input.max_chars
    texts = [p.text[:limit] for p in prompts]
    scores = np.array(
        [
            result.score
            for i in range(0, len(texts), SCORE_BATCH)
            for result in model.score_batch(texts[i : i + SCORE_BATCH])
        ]
    )
    return {
        "file": path.name,
        "model": f"{model.manifest.name} {model.version}",
        "threshold": model.threshold,
        **external_report(prompts, scores, model.threshold),
    }
