"""What a retraining run reads: a dataset the assembler wrote, and the generated base corpus
the committed model was built from."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import orjson

from l2loop.workers.assembly.dataset import SPLITS
from l2model.corpus import CorpusSplit, generate_corpus, read_jsonl, split_corpus

# The assembler's split files (train / val / test) inside datasets/<version>/.


@dataclass(frozen=True)
class NewData:
    """A retraining dataset: its version, directory, splits and manifest (as written)."""

    version: str
    path: Path
    split: CorpusSplit
    manifest: dict[str, object]

    @classmethod
    def read(cls, path: Path) -> NewData:
        train, validation, test = (read_jsonl(path / f"{name}.jsonl") for name in SPLITS)
        manifest_path = path / "manifest.json"
        manifest = orjson.loads(manifest_path.read_bytes()) if manifest_path.exists() else {}
        return cls(path.name, path, CorpusSplit(train, validation, test), manifest)


@functools.cache
def base_corpus(size: int, seed: int) -> CorpusSplit:
    """The generated corpus the committed model was built from, split the same way."""
    return split_corpus(generate_corpus(size, seed), seed)
