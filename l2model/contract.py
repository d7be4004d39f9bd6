"""The contract every L2 model directory honours, whatever trained it.

A model is a directory holding ``model.onnx`` and ``manifest.json``. The graph has one
input and four outputs:

- ``binary_logits`` [N, 2]: benign/threat logits; P(threat) is softmax(...)[:, 1]
- ``family_logits`` [N, F]: over ``manifest.labels.family``
- ``severity`` [N, 1]: 0..1
- ``context_logits`` [N, C]: over ``manifest.labels.context``

``input.kind`` says what the input is: ``text`` is the raw prompt as a string tensor
[N, 1] (the lite model carries its own featuriser in the graph); ``tokens`` means
``input_ids``/``attention_mask`` int64 [N, T] made with the ``tokenizer.json`` beside it;
``ngrams`` means ``ngram_ids`` int64 and ``ngram_values`` float32 [N, L], the vocabulary
columns of each prompt's n-grams and their TF-IDF values, found with the vocabulary and idf
in the ``ngrams.npy`` beside it (``l2model.ngrams``). An ``ngrams`` graph with a memory of
confirmed examples (``l2model.memory``) reads ``memory_dots`` float32 [N, m] too: each
prompt's dot products with the memory's m prototypes, found with the ``prototypes.npz``
beside it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
VOCABULARY_FILE = "ngrams.npy"
# An ``ngrams`` graph's inputs.
NGRAM_IDS = "ngram_ids"
NGRAM_VALUES = "ngram_values"
PROTOTYPES_FILE = "prototypes.npz"
MEMORY_DOTS = "memory_dots"

OUTPUT_BINARY = "binary_logits"
OUTPUT_FAMILY = "family_logits"
OUTPUT_SEVERITY = "severity"
OUTPUT_CONTEXT = "context_logits"
OUTPUTS = (OUTPUT_BINARY, OUTPUT_FAMILY, OUTPUT_SEVERITY, OUTPUT_CONTEXT)

# Family and context vocabularies of the training records (seeds: incremental training guide).
FAMILIES = ("CMD", "ENC", "JB", "HC", "PI", "PII", "RAG", "benign")
CONTEXTS = ("technical", "conversational", "educational", "attack")


class ModelInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["text", "tokens", "ngrams"]
    name: str = "text"
    max_chars: int = 4096
    max_tokens: int | None = None
    # ``ngrams``: each path's n-gram lengths, in the vocabulary's column order.
    ngram_ranges: dict[str, tuple[int, int]] | None = None


class ModelLabels(BaseModel):
    model_config = ConfigDict(frozen=True)

    binary: tuple[str, str] = ("benign", "threat")
    family: tuple[str, ...] = FAMILIES
    context: tuple[str, ...] = CONTEXTS


class Manifest(BaseModel):
    """``manifest.json``: what a scorer needs to run the graph and name its outputs."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    kind: Literal["lite", "fast", "minilm"]
    input: ModelInput
    labels: ModelLabels = ModelLabels()
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    created_at: datetime | None = None

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        return cls.model_validate_json((model_dir / MANIFEST_FILE).read_bytes())
