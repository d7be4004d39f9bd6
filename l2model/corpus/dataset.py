"""Deterministic train/validation/test split and JSONL files of training records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from l2model.private import open_private, private_dir
from l2model.record import TrainingRecord, normalise_text, seeded_rank

SPLIT_NAMES = ("train", "validation", "test")
FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class CorpusSplit:
    train: list[TrainingRecord]
    validation: list[TrainingRecord]
    test: list[TrainingRecord]

    def parts(self) -> Iterator[tuple[str, list[TrainingRecord]]]:
        yield from zip(SPLIT_NAMES, (self.train, self.validation, self.test), strict=True)


def stratum(record: TrainingRecord) -> tuple[int, str, bool]:
    """Label and family, with hard negatives apart so every split holds its share of them."""
    return record.label, record.family, record.is_hard_negative


def split_corpus(records: Iterable[TrainingRecord], seed: int = 0) -> CorpusSplit:
    """80/10/10 within every stratum. Records sharing a normalised text travel together; within
    a stratum texts are ordered by a seeded hash of the text, so the split does not depend on
    the order of ``records``."""
    groups: dict[str, list[TrainingRecord]] = {}
    for record in records:
        groups.setdefault(normalise_text(record.text), []).append(record)
    strata: dict[tuple[int, str, bool], list[str]] = {}
    for key, members in groups.items():
        strata.setdefault(stratum(members[0]), []).append(key)
    parts: tuple[list[TrainingRecord], ...] = ([], [], [])
    for stratum_key in sorted(strata):
        keys = sorted(strata[stratum_key], key=lambda k: seeded_rank(seed, k))
        n_train = round(len(keys) * FRACTIONS[0])
        n_validation = round(len(keys) * FRACTIONS[1])
        bounds = (0, n_train, n_train + n_validation, len(keys))
        for part, start, stop in zip(parts, bounds, bounds[1:], strict=False):
            for key in keys[start:stop]:
                part.extend(groups[key])
    return CorpusSplit(*parts)


def write_jsonl(path: Path, records: Iterable[TrainingRecord]) -> None:
    private_dir(path.parent)
    with open_private(path, "wb") as out:
        for record in records:
            out.write(orjson.dumps(record.model_dump()) + b"\n")


def read_jsonl(path: Path) -> list[TrainingRecord]:
    with path.open("rb") as lines:
        return [TrainingRecord.model_validate(orjson.loads(line)) for line in lines if line.strip()]


def write_split(out_dir: Path, split: CorpusSplit) -> dict[str, Path]:
    paths = {name: out_dir / f"{name}.jsonl" for name in SPLIT_NAMES}
    for name, records in split.parts():
        write_jsonl(paths[name], records)
    return paths
