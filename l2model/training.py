"""What every trainer shares: the class weights, the threshold choice on the validation split,
and the parts of the manifest that describe the data and the threshold."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import orjson

from l2model.contract import OUTPUT_BINARY, Manifest
from l2model.corpus import CorpusSplit
from l2model.evaluation import (
    MAX_FP_RATE,
    choose_threshold,
    corpus_report,
    logit_midpoint,
    threat_scores,
)
from l2model.golden import refuse_golden
from l2model.record import TrainingRecord

# Benign 1.0, malicious 1.5: the class weights the retraining handoff prescribes.
CLASS_WEIGHT = {0: 1.0, 1: 1.5}


def validation_threshold(
    records: Sequence[TrainingRecord],
    outputs: dict[str, np.ndarray],
    other_hard_negative_scores: np.ndarray | None = None,
) -> float:
    """``choose_threshold`` on the validation split's outputs, rounded for the manifest;
    ``other_hard_negative_scores``: P(threat) of hard negatives outside the validation split
    (the training split's) that must stay unflagged too."""
    # Choosing a threshold fits the model to these records as much as training does.
    refuse_golden([r.text for r in records], what="the threshold's validation set")
    return round(
        choose_threshold(
            np.array([r.label for r in records]),
            threat_scores(outputs[OUTPUT_BINARY]),
            np.array([r.is_hard_negative for r in records]),
            other_hard_negative_scores=other_hard_negative_scores,
        ),
        6,
    )


def recall_constrained_threshold(
    attack_scores: np.ndarray, target_recall: float, benign_scores: np.ndarray
) -> float:
    """The operating point of a retrained candidate: recall on known attacks at least
    ``target_recall``, then the fewest benign prompts flagged; among the thresholds that flag
    that few, the one of highest recall, placed midway (in logit space) between the nearest
    benign and malicious scores. Hard negatives are among the benign scores, never a floor: a
    hard negative the learner cannot separate is flagged and reported (the gate names it),
    not paid for with the whole model's recall."""
    if attack_scores.size == 0:
        raise ValueError("no known attack to hold recall on")
    ranked = np.sort(attack_scores)[::-1]
    needed = min(len(ranked), max(1, math.ceil(target_recall * len(ranked) - 1e-9)))
    # Every threshold at or below this score keeps the recall; the highest flags fewest.
    highest = float(ranked[needed - 1])
    below = benign_scores[benign_scores < highest]
    nearest_benign = float(below.max()) if below.size else -math.inf
    lowest_caught = float(attack_scores[attack_scores > nearest_benign].min())
    return round(logit_midpoint(nearest_benign, lowest_caught), 6)


def threshold_selection(
    records: Sequence[TrainingRecord], outputs: dict[str, np.ndarray], threshold: float
) -> dict[str, object]:
    """The manifest's account of how the threshold was chosen and what it does there."""
    report = corpus_report(records, outputs, threshold)
    return {
        "split": "validation",
        "rule": f"highest recall with FP rate < {MAX_FP_RATE:.0%} and no hard negative flagged",
        **{
            key: report[key]
            for key in ("fp_rate", "recall", "hard_negatives", "hard_negatives_flagged")
        },
    }


def _split_summary(records: Sequence[TrainingRecord]) -> dict[str, int]:
    return {
        "records": len(records),
        "benign": sum(r.label == 0 for r in records),
        "malicious": sum(r.label == 1 for r in records),
        "hard_negatives": sum(r.is_hard_negative for r in records),
    }


def training_summary(split: CorpusSplit, size: int, seed: int) -> dict[str, object]:
    everything = [r for _, part in split.parts() for r in part]
    languages = Counter(r.notes.rsplit("lang=", 1)[-1] for r in everything if "lang=" in r.notes)
    return {
        "generator": "l2model.corpus.generate_corpus",
        "size": size,
        "seed": seed,
        "split": "80/10/10 stratified by label, family and hard-negative flag; split by text hash",
        "splits": {name: _split_summary(part) for name, part in split.parts()},
        "families": dict(sorted(Counter(r.family for r in everything).items())),
        "template_languages": dict(sorted(languages.items())),
    }


def manifest_bytes(manifest: Manifest) -> bytes:
    return orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
