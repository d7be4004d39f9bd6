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
from l2model.golden import load_golden
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


def generate_corpus(
    size: int = DEFAULT_SIZE, seed: int = 0, *, exclude_golden: bool = True
) -> list[TrainingRecord]:
    """``size`` records with distinct normalised texts, 60 % benign (hard negatives included).

    Golden texts are never drawn (they count as already taken), so no corpus of any size or
    seed holds one. The golden set was cut from texts the default corpus does not contain, so
    excluding it leaves the default corpus, and the committed model, unchanged. Only the
    golden set's own builder passes ``exclude_golden=False``."""
    records = hard_negatives()
    seen = {normalise_text(record.text) for record in records}
    if len(seen) != len(records):
        raise ValueError("two hard negatives share a normalised text")
    if exclude_golden:
        seen |= {normalise_text(probe.text) for probe in load_golden().probes}
    benign_target = round(size * BENIGN_SHARE)
    if benign_target <= len(records):
        raise ValueError(f"size {size} leaves no room for templated benign records")
    records += expand(BENIGN_SPECS, benign_target - len(records), seed, seen)
    records += expand(ATTACK_SPECS, size - benign_target, seed, seen)
    return records
