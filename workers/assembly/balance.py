"""Phase 3, balancing and splitting: the majority class's variations are dropped (never a
curated example) until the classes are within ``max_class_ratio``, then near-duplicate
groups are assigned 80/10/10 within each stratum."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from l2loop.workers.assembly.dataset import AssemblyConfig
from l2loop.workers.assembly.progress import Ticker
from l2loop.workers.assembly.resolve import Resolved
from l2loop.workers.assembly.spill import ORIGINAL, read_spill
from l2model.record import TrainingRecord, seeded_rank


@dataclass(frozen=True)
class Balance:
    """Benign variations numbered above ``cut``, or at ``cut`` with rank >= ``rank_at``, go."""

    cut: int
    rank_at: int
    dropped: int
    before: dict[str, int]
    after: dict[str, int]
    met: bool

    def keeps(self, number: int, rank: int) -> bool:
        return number < self.cut or (number == self.cut and rank < self.rank_at)


def balance_classes(
    resolved: Resolved, base: list[TrainingRecord], config: AssemblyConfig
) -> Balance:
    """Majority:minority at most ``max_class_ratio`` over what the trainer sees (base corpus
    plus this dataset), by dropping benign variations: the last-numbered first, lowest rank
    kept. Curated examples and hard negatives are never dropped."""
    variations = [len(ranks) for ranks in resolved.variation_ranks]
    base_counts = Counter(record.label for record in base)
    benign = base_counts[0] + resolved.originals[0] + sum(variations)
    malicious = base_counts[1] + resolved.originals[1]
    before = {"benign": benign, "malicious": malicious}
    excess = benign - int(config.max_class_ratio * malicious)
    cut, rank_at, dropped = len(variations), 0, 0
    for number in reversed(range(len(variations))):
        if excess <= 0:
            break
        cut = number
        if excess >= variations[number]:
            excess -= variations[number]
            dropped += variations[number]
            continue
        ranks = sorted(resolved.variation_ranks[number])
        rank_at = ranks[len(ranks) - excess]
        dropped += sum(1 for rank in ranks if rank >= rank_at)
        excess = 0
    after = {"benign": benign - dropped, "malicious": malicious}
    minority = min(after.values())
    met = minority > 0 and max(after.values()) <= config.max_class_ratio * minority
    return Balance(cut, rank_at, dropped, before, after, met)


@dataclass
class Assignment:
    groups: dict[bytes, int]
    kept: int


def assign_splits(
    spill_path: Path, balance: Balance, config: AssemblyConfig, ticker: Ticker
) -> Assignment:
    """Every near-duplicate group to one split. Within each stratum (label, family, hard
    negative) groups are taken in seeded-hash order, each to the split furthest below its
    share of the records so far: 80/10/10 however unequal the groups."""
    sizes: dict[bytes, int] = {}
    strata: dict[bytes, str] = {}
    kept = 0
    for group, stratum_key, number, rank, _, _ in read_spill(spill_path):
        if number != ORIGINAL and not balance.keeps(number, rank):
            continue
        kept += 1
        ticker.tick("split", kept)
        sizes[group] = sizes.get(group, 0) + 1
        strata.setdefault(group, stratum_key)
    by_stratum: dict[str, list[tuple[str, bytes]]] = {}
    for group, stratum_key in strata.items():
        by_stratum.setdefault(stratum_key, []).append(
            (seeded_rank(config.seed, group.hex()), group)
        )
    assigned: dict[bytes, int] = {}
    fractions = config.split_fractions
    for stratum_key in sorted(by_stratum):
        filled = [0, 0, 0]
        for _, group in sorted(by_stratum[stratum_key]):
            total = sum(filled) + sizes[group]
            deficits = [fractions[i] * total - filled[i] for i in range(3)]
            chosen = max(range(3), key=lambda i: (deficits[i], -i))
            filled[chosen] += sizes[group]
            assigned[group] = chosen
    ticker.done("split", kept)
    return Assignment(assigned, kept)
