"""Phase 2, resolution: examples in ``example_id`` order, each read back from its latest
revision by offset. Conflicts are held back (``conflicts.jsonl``), duplicates of the base
corpus dropped, the rest weighted, and each false positive gets its variations. Records go
to the spill with their near-duplicate group; only counts and one integer per text stay in
memory."""

from __future__ import annotations

import os
import random
import re
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from l2loop.schemas.reports import CuratedExample
from l2loop.workers.assembly.dataset import VARIATION_SOURCE, AssemblyConfig
from l2loop.workers.assembly.left_out import Listing
from l2loop.workers.assembly.progress import Ticker
from l2loop.workers.assembly.scan import Latest, Scan
from l2loop.workers.assembly.spill import ORIGINAL, SPILL_FILE, spill_record
from l2model.corpus.variations import Paraphraser, near_duplicate_key
from l2model.private import open_private
from l2model.record import TrainingRecord, seeded_rank, text_key

_TRAINING_FIELDS = set(TrainingRecord.model_fields)
_DATED_SOURCE = re.compile(r"_\d{4}_\d{2}_\d{2}$")


@dataclass
class Resolved:
    levels: int = 0
    examples: int = 0
    superseded: int = 0
    duplicate_of_base: int = 0
    additions: Counter[str] = field(default_factory=Counter)
    fp_examples: int = 0
    fp_short: int = 0
    variation_methods: Counter[str] = field(default_factory=Counter)
    # Ranks of the benign variations by variation number, to drop some deterministically.
    variation_ranks: list[array[int]] = field(default_factory=list)
    originals: Counter[int] = field(default_factory=Counter)


def resolve_examples(
    handles: Sequence[IO[bytes]],
    scan: Scan,
    base_labels: Mapping[str, int],
    golden: frozenset[str],
    conflicts: Conflicts,
    config: AssemblyConfig,
    temp: Path,
    ticker: Ticker,
) -> Resolved:
    levels = _variation_levels(scan, base_labels, config)
    resolved = Resolved(levels=levels, variation_ranks=[array("Q") for _ in range(levels)])
    taken = {_compact(key) for key in base_labels} | {_compact(key) for key in golden}
    taken |= {int.from_bytes(key[:8]) for key in scan.examples}
    paraphraser = Paraphraser(lambda text: _compact(text_key(text)) in taken)
    spread = config.variation_weight_max - config.variation_weight_min
    total = len(scan.examples)
    with open_private(temp / SPILL_FILE, "wb") as spill:
        for done, key in enumerate(sorted(scan.examples), 1):
            ticker.tick("resolve", done, total)
            latest = scan.examples.pop(key)
            resolved.examples += 1
            resolved.superseded += latest.revisions - 1
            handle = handles[latest.file]
            handle.seek(latest.offset)
            example = CuratedExample.model_validate(orjson.loads(handle.read(latest.size)))
            if latest.labels == 0b11:
                conflicts.add(example, "reported_both_ways", latest, scan.names)
                continue
            base_label = base_labels.get(example.example_id)
            if base_label is not None:
                if base_label == example.label:
                    resolved.duplicate_of_base += 1
                else:
                    conflicts.add(example, "contradicts_base", latest, scan.names)
                continue
            record = _weighted(example, config)
            group = near_duplicate_key(record.text)
            spill_record(spill, group, record, ORIGINAL, 0)
            resolved.additions[source_kind(record.source)] += 1
            resolved.originals[record.label] += 1
            if record.label != 0:
                continue
            resolved.fp_examples += 1
            if levels == 0:
                continue
            rng = random.Random(f"{config.seed}:{example.example_id}")
            made = paraphraser.variations(record.text, levels, rng)
            resolved.fp_short += len(made) < levels
            weight = round(config.variation_weight_min + spread * record.confidence, 3)
            for number, variation in enumerate(made):
                variation_key = text_key(variation.text)
                taken.add(_compact(variation_key))
                rank = _compact(seeded_rank(config.seed, variation_key))
                resolved.variation_ranks[number].append(rank)
                resolved.variation_methods[variation.method] += 1
                copy = record.model_copy(
                    update={
                        "text": variation.text,
                        "weight_multiplier": weight,
                        "source": VARIATION_SOURCE,
                        "rule_id": "",
                        "notes": f"variation {number + 1} of example {example.example_id}: "
                        f"{variation.change}",
                    }
                )
                spill_record(spill, group, copy, number, rank)
        spill.flush()
        os.fsync(spill.fileno())
    ticker.done("resolve", total)
    return resolved


def _variation_levels(scan: Scan, base_labels: Mapping[str, int], config: AssemblyConfig) -> int:
    """Variations to make per false positive: as configured, or fewer when balancing would
    drop them anyway (so that no dropped variation takes a text another one could have had).

    Which examples become additions is known from the scan alone: one label (no conflict),
    not in the base corpus."""
    fp = malicious = 0
    for key, latest in scan.examples.items():
        if latest.labels == 0b11 or key.hex() in base_labels:
            continue
        fp += latest.labels == 0b01
        malicious += latest.labels == 0b10
    if fp == 0:
        return 0
    base_malicious = sum(base_labels.values())
    base_benign = len(base_labels) - base_malicious
    room = int(config.max_class_ratio * (base_malicious + malicious)) - base_benign - fp
    return max(0, min(config.variations_per_fp, -(-room // fp)))


def _weighted(example: CuratedExample, config: AssemblyConfig) -> TrainingRecord:
    """Weights of docs/architecture.md: production-confirmed (a quorum of reporters, or released
    in review) gets the confirmed weight; less support keeps the report agent's weight, within
    bulk and confirmed."""
    if example.confirmed or example.released_in_review:
        weight = config.confirmed_weight
    else:
        weight = min(max(example.weight_multiplier, config.bulk_weight), config.confirmed_weight)
    fields = example.model_dump(include=_TRAINING_FIELDS)
    fields["weight_multiplier"] = weight
    return TrainingRecord.model_validate(fields)


def _compact(hex_key: str) -> int:
    """The first 64 bits of a sha256: enough to tell texts apart among tens of millions."""
    return int(hex_key[:16], 16)


def source_kind(source: str) -> str:
    return _DATED_SOURCE.sub("", source)


class Conflicts(Listing):
    def add(self, example: CuratedExample, reason: str, latest: Latest, names: list[str]) -> None:
        where = {
            str(label): f"{names[at[0]]}:{at[1]}"
            for label, at in enumerate(latest.where)
            if at is not None
        }
        self._record(
            reason,
            {
                "example_id": example.example_id,
                "reason": reason,
                "text": example.text,
                "latest_label": example.label,
                "revisions": latest.revisions,
                "latest_revision_by_label": where,
            },
        )
