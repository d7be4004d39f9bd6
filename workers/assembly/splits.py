"""Phase 4, writing: the spill read once more, each kept record to its group's split file,
counted by label, family, source and category for the manifest."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from l2loop.workers.assembly.balance import Assignment, Balance
from l2loop.workers.assembly.dataset import SPLITS
from l2loop.workers.assembly.progress import Ticker
from l2loop.workers.assembly.resolve import source_kind
from l2loop.workers.assembly.spill import ORIGINAL, SPILL_FILE, read_spill
from l2model.private import open_private


@dataclass
class SplitStats:
    records: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    families: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    sub_categories: Counter[str] = field(default_factory=Counter)
    weights: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        label = "benign" if record["label"] == 0 else "malicious"
        self.labels[label] += 1
        self.families[record["family"]] += 1
        self.sources[source_kind(record["source"])] += 1
        self.sub_categories[record["sub_category"] or "(none)"] += 1
        self.weights[label] += record["weight_multiplier"]

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "labels": dict(sorted(self.labels.items())),
            "families": dict(sorted(self.families.items())),
            "sources": dict(sorted(self.sources.items())),
            "sub_categories": dict(sorted(self.sub_categories.items())),
            "weight_sums": {k: round(v, 3) for k, v in sorted(self.weights.items())},
        }


@dataclass
class Written:
    splits: dict[str, SplitStats]
    groups: dict[str, int]

    @property
    def total(self) -> int:
        return sum(stats.records for stats in self.splits.values())


def write_splits(temp: Path, assignment: Assignment, balance: Balance, ticker: Ticker) -> Written:
    stats = {name: SplitStats() for name in SPLITS}
    groups_per_split = Counter(assignment.groups.values())
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open_private(temp / f"{name}.jsonl", "wb")) for name in SPLITS]
        done = 0
        for group, _, number, rank, _, line in read_spill(temp / SPILL_FILE):
            if number != ORIGINAL and not balance.keeps(number, rank):
                continue
            chosen = assignment.groups[group]
            outs[chosen].write(line)
            stats[SPLITS[chosen]].add(orjson.loads(line))
            done += 1
            ticker.tick("write", done, assignment.kept)
        for out in outs:
            out.flush()
            os.fsync(out.fileno())
    ticker.done("write", assignment.kept)
    return Written(stats, {SPLITS[i]: groups_per_split[i] for i in range(3)})
