"""Metrics the gate, the manifest and ``l2loop model eval`` report, and the threshold choice
they depend on.

Flagged means ``score >= threshold``, as the scorer decides ``is_threat``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from l2model.corpus.benign import PROGRAMMING_PREFIX
from l2model.record import HARD_NEGATIVE_PREFIX, TrainingRecord
from l2model.runtime import L2Model

MAX_FP_RATE = 0.01
SCORE_BATCH = 256
# A prediction counts as confident when P(threat) or P(benign) reaches this (seeds: "predictions
# >0.85 confidence are 95%+ accurate").
CONFIDENCE = 0.85
CALIBRATION_TARGET = 0.95
RELIABILITY_BUCKETS = 10


def percent(value: float | None, digits: int = 2, unit: str = " %", missing: str = "-") -> str:
    """A rate as every report writes it: ``percent(0.1234)`` is ``"12.34 %"``; ``missing``
    where it was not measured. ``unit=""`` gives the bare figure, for a table headed in %."""
    return missing if value is None else f"{100 * value:.{digits}f}{unit}"


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def _ratio(numerator: int, denominator: int) -> float | None:
    """Like ``_rate``, but undefined (None) rather than 0 when nothing was counted."""
    return _rate(numerator, denominator) if denominator else None


class ConfusionMatrix(BaseModel):
    model_config = ConfigDict(frozen=True)

    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int

    @classmethod
    def of(cls, labels: np.ndarray, flagged: np.ndarray) -> ConfusionMatrix:
        malicious = labels == 1
        return cls(
            true_positives=int(np.sum(flagged & malicious)),
            false_positives=int(np.sum(flagged & ~malicious)),
            true_negatives=int(np.sum(~flagged & ~malicious)),
            false_negatives=int(np.sum(~flagged & malicious)),
        )

    @property
    def benign(self) -> int:
        return self.false_positives + self.true_negatives

    @property
    def malicious(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def flagged(self) -> int:
        return self.true_positives + self.false_positives


def binary_report(labels: np.ndarray, flagged: np.ndarray) -> dict[str, float | int]:
    matrix = ConfusionMatrix.of(labels, flagged)
    return {
        "benign": matrix.benign,
        "malicious": matrix.malicious,
        "false_positives": matrix.false_positives,
        "false_negatives": matrix.false_negatives,
        "fp_rate": _rate(matrix.false_positives, matrix.benign),
        "recall": _rate(matrix.true_positives, matrix.malicious),
        "precision": _rate(matrix.true_positives, matrix.flagged),
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
    other_hard_negative_scores: np.ndarray | None = None,
) -> float:
    """The threshold of highest recall whose FP rate stays below ``max_fp_rate`` and that
    flags no hard negative (of these prompts, nor any of ``other_hard_negative_scores``);
    among thresholds with that recall, the one that flags the fewest benign prompts, placed
    midway (in logit space) between the nearest benign and malicious scores so that both
    sides keep a margin."""
    benign = np.sort(scores[labels == 0])[::-1]
    malicious = np.sort(scores[labels == 1])
    # The threshold must lie above the benign score ranked just past the budget of flags.
    allowed = math.ceil(max_fp_rate * len(benign)) - 1
    floor = float(benign[allowed]) if 0 <= allowed < len(benign) else -math.inf
    if hard_negative.any():
        floor = max(floor, float(scores[hard_negative].max()))
    if other_hard_negative_scores is not None and other_hard_negative_scores.size:
        floor = max(floor, float(other_hard_negative_scores.max()))
    caught = malicious[malicious > floor]
    if caught.size == 0:
        raise ValueError("no threshold flags any malicious prompt within the FP budget")
    lowest_caught = float(caught[0])
    below = benign[benign < lowest_caught]
    nearest_benign = max(floor, float(below[0])) if below.size else floor
    return logit_midpoint(nearest_benign, lowest_caught)


def logit_midpoint(low: float, high: float) -> float:
    eps = 1e-9

    def logit(p: float) -> float:
        p = min(max(p, eps), 1 - eps)
        return math.log(p / (1 - p))

    if not math.isfinite(low):
        return high / 2
    middle = 1 / (1 + math.exp(-(logit(low) + logit(high)) / 2))
    return min(max(middle, 1e-6), 1 - 1e-6)


class LabeledPrompt(BaseModel):
    """One line of a labeled JSONL file. Only ``text`` and ``label`` are required; the other
    fields, when present, add the per-family, programming and hard-negative figures.
    Training records (``l2model.corpus``) and the external evaluation files both read as this."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str
    label: Literal[0, 1]
    family: str | None = None
    category: str | None = None
    sub_category: str | None = None
    notes: str | None = None
    source: str | None = None
    # The prompt's language (an ISO 639-1 code) where the file names it.
    lang: str | None = None
    ambiguous: bool = False

    @property
    def is_hard_negative(self) -> bool:
        return self.label == 0 and (self.notes or "").startswith(HARD_NEGATIVE_PREFIX.rstrip())

    @property
    def is_programming_question(self) -> bool:
        return self.label == 0 and (self.sub_category or "").startswith(PROGRAMMING_PREFIX)


def read_labeled(path: Path) -> list[LabeledPrompt]:
    """Every non-blank line of ``path``; a bad line raises ``ValueError`` naming its number."""
    prompts = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                prompts.append(LabeledPrompt.model_validate_json(line))
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "line"
                raise ValueError(f"{path}:{number}: {where}: {first['msg']}") from error
    if not prompts:
        raise ValueError(f"{path} holds no labeled prompt")
    return prompts


def score_texts(model: L2Model, texts: Sequence[str], batch_size: int = SCORE_BATCH) -> np.ndarray:
    """P(threat) of every text, scored as in production: in batches, on the first
    ``max_chars`` characters."""
    limit = model.manifest.input.max_chars
    clipped = [text[:limit] for text in texts]
    return np.array(
        [
            result.score
            for start in range(0, len(clipped), batch_size)
            for result in model.score_batch(clipped[start : start + batch_size])
        ],
        dtype=np.float64,
    )


class GroupRate(BaseModel):
    """The share of one group's prompts that the model flagged: recall for a family of
    attacks, FP rate for a category of benign prompts."""

    model_config = ConfigDict(frozen=True)

    prompts: int
    flagged: int
    rate: float


class ClassifierMetrics(BaseModel):
    """How one model's verdicts on a labeled set compare with the labels. A rate is None when
    the set holds nothing to compute it on (no benign prompt for the FP rate, ...)."""

    model_config = ConfigDict(frozen=True)

    prompts: int
    confusion: ConfusionMatrix
    fp_rate: float | None
    recall: float | None
    precision: float | None
    f1: float | None
    accuracy: float
    # None when no malicious prompt names its family / no benign prompt its category.
    recall_by_family: dict[str, GroupRate] | None
    fp_rate_by_category: dict[str, GroupRate] | None
    programming_questions: int
    programming_false_positives: int
    programming_fp_rate: float | None
    hard_negatives: int
    hard_negatives_flagged: int


def classifier_metrics(prompts: Sequence[LabeledPrompt], flagged: np.ndarray) -> ClassifierMetrics:
    labels = np.array([p.label for p in prompts])
    matrix = ConfusionMatrix.of(labels, flagged)
    programming = np.array([p.is_programming_question for p in prompts], dtype=bool)
    hard = np.array([p.is_hard_negative for p in prompts], dtype=bool)
    precision = _ratio(matrix.true_positives, matrix.flagged)
    recall = _ratio(matrix.true_positives, matrix.malicious)
    f1 = (
        round(2 * precision * recall / (precision + recall), 6)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    return ClassifierMetrics(
        prompts=len(prompts),
        confusion=matrix,
        fp_rate=_ratio(matrix.false_positives, matrix.benign),
        recall=recall,
        precision=precision,
        f1=f1,
        accuracy=_rate(matrix.true_positives + matrix.true_negatives, len(prompts)),
        recall_by_family=_rate_by_group(prompts, flagged, 1, lambda p: p.family),
        fp_rate_by_category=_rate_by_group(prompts, flagged, 0, lambda p: p.category),
        programming_questions=int(programming.sum()),
        programming_false_positives=int(np.sum(flagged & programming)),
        programming_fp_rate=_ratio(int(np.sum(flagged & programming)), int(programming.sum())),
        hard_negatives=int(hard.sum()),
        hard_negatives_flagged=int(np.sum(flagged & hard)),
    )


def _rate_by_group(
    prompts: Sequence[LabeledPrompt],
    flagged: np.ndarray,
    label: int,
    group_of: Callable[[LabeledPrompt], str | None],
) -> dict[str, GroupRate] | None:
    """Flagged share per group among the prompts labeled ``label`` that name a group."""
    totals: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for prompt, hit in zip(prompts, flagged, strict=True):
        group = group_of(prompt)
        if prompt.label == label and group:
            totals[group] += 1
            hits[group] += int(hit)
    if not totals:
        return None
    return {
        group: GroupRate(
            prompts=totals[group], flagged=hits[group], rate=_rate(hits[group], totals[group])
        )
        for group in sorted(totals)
    }


class ReliabilityBucket(BaseModel):
    """Prompts whose score falls in [low, high): a calibrated model's ``threat_share`` is
    close to its ``mean_score``."""

    model_config = ConfigDict(frozen=True)

    low: float
    high: float
    prompts: int
    mean_score: float | None
    threat_share: float | None


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True)

    confidence: float
    confident: int
    confident_correct: int
    confident_accuracy: float | None
    target: float
    meets_target: bool | None
    expected_calibration_error: float
    buckets: list[ReliabilityBucket]


def calibration(labels: np.ndarray, scores: np.ndarray) -> Calibration:
    """Confident predictions are scored against the label regardless of the threshold: a
    score >= 0.85 claims a threat, a score <= 0.15 claims a benign prompt."""
    claims_threat = scores >= CONFIDENCE
    claims_benign = scores <= 1 - CONFIDENCE
    confident = int(np.sum(claims_threat | claims_benign))
    correct = int(np.sum(claims_threat & (labels == 1)) + np.sum(claims_benign & (labels == 0)))
    accuracy = _ratio(correct, confident)
    # The last bucket is closed so that a score of exactly 1.0 is counted.
    index = np.minimum((scores * RELIABILITY_BUCKETS).astype(int), RELIABILITY_BUCKETS - 1)
    buckets = []
    gap = 0.0
    for bucket in range(RELIABILITY_BUCKETS):
        members = index == bucket
        count = int(members.sum())
        mean_score = round(float(scores[members].mean()), 6) if count else None
        share = _ratio(int(np.sum(labels[members] == 1)), count)
        if mean_score is not None and share is not None:
            gap += count * abs(mean_score - share)
        buckets.append(
            ReliabilityBucket(
                low=bucket / RELIABILITY_BUCKETS,
                high=(bucket + 1) / RELIABILITY_BUCKETS,
                prompts=count,
                mean_score=mean_score,
                threat_share=share,
            )
        )
    return Calibration(
        confidence=CONFIDENCE,
        confident=confident,
        confident_correct=correct,
        confident_accuracy=accuracy,
        target=CALIBRATION_TARGET,
        meets_target=None if accuracy is None else accuracy >= CALIBRATION_TARGET,
        expected_calibration_error=round(gap / len(scores), 6) if len(scores) else 0.0,
        buckets=buckets,
    )


def external_report(
    prompts: Sequence[LabeledPrompt], scores: np.ndarray, threshold: float
) -> dict[str, object]:
    """Overall figures, then per source repository; ambiguous prompts (attacks whose system
    prompt is missing) are also left out once, since the text alone reads as benign."""
    labels = np.array([p.label for p in prompts])
    flagged = scores >= threshold
    clear = ~np.array([p.ambiguous for p in prompts])
    repos = np.array([(p.source or "").split(":", 1)[0] for p in prompts])
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
    prompts = read_labeled(path)
    scores = score_texts(model, [p.text for p in prompts])
    return {
        "file": path.name,
        "model": f"{model.manifest.name} {model.version}",
        "threshold": model.threshold,
        **external_report(prompts, scores, model.threshold),
    }
