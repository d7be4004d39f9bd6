"""The synthetic training corpus of the lite model: templates, hard negatives and the split.

``generate_corpus(size, seed)`` is deterministic: the same arguments give the same records in
the same order, on any machine.
"""

from __future__ import annotations

from l2model.corpus import attacks, benign, i18n
from l2model.corpus.dataset import (
    SPLIT_NAMES,
    CorpusSplit,
    read_jsonl,
    split_corpus,
    write_jsonl,
    write_split,
)
from l2model.corpus.engine import expand
from l2model.corpus.hard_negatives import hard_negatives
from l2model.record import TrainingRecord, normalise_text

__all__ = [
    "BENIGN_SHARE",
    "DEFAULT_SIZE",
    "SPLIT_NAMES",
    "CorpusSplit",
    "generate_corpus",
    "read_jsonl",
    "split_corpus",
    "write_jsonl",
    "write_split",
]

DEFAULT_SIZE = 25_000
BENIGN_SHARE = 0.6

BENIGN_SPECS = benign.SPECS + tuple(spec for spec in i18n.SPECS if spec.label == 0)
ATTACK_SPECS = attacks.SPECS + tuple(spec for spec in i18n.SPECS if spec.label == 1)


def generate_corpus(size: int = DEFAULT_SIZE, seed: int = 0) -> list[TrainingRecord]:
    """``size`` records with distinct normalised texts, 60 % benign (hard negatives included)."""
    records = hard_negatives()
    seen = {normalise_text(record.text) for record in records}
    if len(seen) != len(records):
        raise ValueError("two hard negatives share a normalised text")
    benign_target = round(size * BENIGN_SHARE)
    if benign_target <= len(records):
        raise ValueError(f"size {size} leaves no room for templated benign records")
    records += expand(BENIGN_SPECS, benign_target - len(records), seed, seen)
    records += expand(ATTACK_SPECS, size - benign_target, seed, seen)
    return records
