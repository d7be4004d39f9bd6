"""What an assembly depends on and what it leaves: the configuration that is part of a
dataset's version, the files of a dataset directory, and the dataset returned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict

from l2loop.settings import Settings

# Bump when the same input and configuration would give different files.
ASSEMBLY_FORMAT = 1
DATASETS_DIR = "datasets"
SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.json"
REJECTED_FILE = "rejected.jsonl"
CONFLICTS_FILE = "conflicts.jsonl"
VARIATION_SOURCE = "synthetic_variation"
# Sorted keys: the same content is the same bytes, so a re-run is byte-identical.
JSON = orjson.OPT_SORT_KEYS
JSON_PRETTY = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2


class AssemblyConfig(BaseModel):
    """The settings an assembly depends on; part of the dataset's version."""

    model_config = ConfigDict(frozen=True)

    variations_per_fp: int
    variation_weight_min: float
    variation_weight_max: float
    confirmed_weight: float
    bulk_weight: float
    max_class_ratio: float
    split_fractions: tuple[float, float, float]
    seed: int
    base_size: int
    base_seed: int
    golden_version: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            variations_per_fp=settings.assembly_variations_per_fp,
            variation_weight_min=settings.assembly_variation_weight_min,
            variation_weight_max=settings.assembly_variation_weight_max,
            confirmed_weight=settings.assembly_confirmed_weight,
            bulk_weight=settings.assembly_bulk_weight,
            max_class_ratio=settings.assembly_max_class_ratio,
            split_fractions=(
                settings.assembly_train_fraction,
                settings.assembly_val_fraction,
                settings.assembly_test_fraction,
            ),
            seed=settings.assembly_seed,
            base_size=settings.base_corpus_size,
            base_seed=settings.base_corpus_seed,
            golden_version=settings.golden_version,
        )


@dataclass(frozen=True)
class AssembledDataset:
    version: str
    path: Path
    manifest: dict[str, Any]
    # False when a dataset of this version already existed and was returned as it was.
    built: bool = True

    def split_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"no split {split!r}; the splits are {SPLITS}")
        return self.path / f"{split}.jsonl"
