"""TF-IDF text features that scikit-learn and the ONNX graph compute identically.

Each feature path is a token regex plus an n-gram range. scikit-learn runs the regex with
Python's ``re``; the graph runs the same pattern string through onnxruntime's ``Tokenizer``
(RE2). Both patterns are plain character classes written with literal characters, which the
two engines read the same way; that is what makes the graph exact, and why neither scikit-learn's
own analyzers nor skl2onnx's converter is used (see docs/decisions/0005-lite-model-graph.md).

- ``char``: every non-whitespace character is a token and so is every whitespace run, kept
  as written (``"\\n\\n"`` is not ``" "``); n-grams of 2 to 5 tokens.
- ``word``: runs of ASCII/Latin-1/Latin Extended-A letters, digits and ``_``; 1- and 2-grams.

Text is lowercased first (``l2model.tokens.lowercase`` in Python, ``StringNormalizer`` with
the ``C.UTF-8`` locale in the graph: with the default ``en_US.UTF-8`` onnxruntime fails to load
the model on machines that lack that locale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from onnx import NodeProto, TensorProto, helper, numpy_helper
from sklearn.feature_extraction.text import TfidfVectorizer

from l2model.tokens import TokenNgrams

# Right-padding the Tokenizer adds to short rows: two characters, so never a char token, and
# "#" is outside the word class, so never a word token either.
PAD_TOKEN = "##"
LOCALE = "C.UTF-8"


@dataclass
class Graph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    def _unique(self, name: str) -> str:
        candidate, i = name, 0
        while candidate in self._names:
            i += 1
            candidate = f"{name}_{i}"
        self._names.add(candidate)
        return candidate

    def const(self, name: str, value: np.ndarray) -> str:
        unique = self._unique(name)
        self.initializers.append(numpy_helper.from_array(value, unique))
        return unique

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        output: str,
        *,
        domain: str = "",
        **attrs: Any,
    ) -> str:
        """Adds a one-output node; ``output`` is the wanted name, the unique one is returned."""
        unique = self._unique(output)
        self.nodes.append(
            helper.make_node(op, list(inputs), [unique], name=unique, domain=domain, **attrs)
        )
        return unique


class TextFeaturiser:
    """The concatenated, per-path L2-normalised TF-IDF matrix of a batch of texts."""

    def __init__(self, paths: Sequence[TokenNgrams]) -> None:
        self.paths = tuple(paths)
        self.vectorizers = [
            TfidfVectorizer(
                analyzer=path.analyse,
                lowercase=False,
                token_pattern=None,
                max_features=path.max_features,
                min_df=2,
                sublinear_tf=True,
                dtype=np.float64,
            )
            for path in self.paths
        ]

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return sp.hstack([v.fit_transform(texts) for v in self.vectorizers], format="csr")

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return sp.hstack([v.transform(texts) for v in self.vectorizers], format="csr")

    @property
    def widths(self) -> dict[str, int]:
        return {
            p.name: len(v.vocabulary_) for p, v in zip(self.paths, self.vectorizers, strict=True)
        }

    def to_onnx(self, graph: Graph, text: str) -> str:
        """Adds the featuriser reading string tensor ``text`` [N, 1]; returns the [N, V] name."""
        flat = graph.node("Reshape", [text, graph.const("flat_shape", np.array([-1]))], "flat")
        lower = graph.node(
            "StringNormalizer",
            [flat],
            "lowered",
            case_change_action="LOWER",
            is_case_sensitive=0,
            locale=LOCALE,
        )
        parts = [
            _tfidf_nodes(graph, lower, path, vectorizer)
            for path, vectorizer in zip(self.paths, self.vectorizers, strict=True)
        ]
        return graph.node("Concat", parts, "features", axis=1)


def _tfidf_nodes(graph: Graph, lower: str, path: TokenNgrams, vectorizer: TfidfVectorizer) -> str:
    name = path.name
    tokens = graph.node(
        "Tokenizer",
        [lower],
        f"{name}_tokens",
        domain="com.microsoft",
        tokenexp=path.pattern,
        pad_value=PAD_TOKEN,
        mincharnum=1,
        mark=0,
    )
    pool, counts, indexes = _ngram_pool(path, vectorizer.vocabulary_)
    low, high = path.ngram_range
    tf = graph.node(
        "TfIdfVectorizer",
        [tokens],
        f"{name}_tf",
        mode="TF",
        min_gram_length=low,
        max_gram_length=high,
        max_skip_count=0,
        pool_strings=pool,
        ngram_counts=counts,
        ngram_indexes=indexes,
    )
    # sublinear_tf: 1 + log(tf) where tf > 0; Log(0) = -inf is computed but never selected.
    zero = graph.const(f"{name}_zero", np.array(0.0, dtype=np.float32))
    one = graph.const(f"{name}_one", np.array(1.0, dtype=np.float32))
    log_tf = graph.node("Add", [graph.node("Log", [tf], f"{name}_log"), one], f"{name}_logp1")
    present = graph.node("Greater", [tf, zero], f"{name}_present")
    sublinear = graph.node("Where", [present, log_tf, zero], f"{name}_sublinear")
    idf = graph.const(f"{name}_idf", vectorizer.idf_.astype(np.float32))
    weighted = graph.node("Mul", [sublinear, idf], f"{name}_tfidf")
    axes = graph.const(f"{name}_axes", np.array([1]))
    norm = graph.node("ReduceL2", [weighted, axes], f"{name}_norm", keepdims=1)
    # An all-zero row stays zero, as in scikit-learn's normalize().
    floor = graph.const(f"{name}_floor", np.array(1e-12, dtype=np.float32))
    safe_norm = graph.node("Max", [norm, floor], f"{name}_safe_norm")
    return graph.node("Div", [weighted, safe_norm], f"{name}_features")


def _ngram_pool(
    path: TokenNgrams, vocabulary: dict[str, int]
) -> tuple[list[str], list[int], list[int]]:
    """TfIdfVectorizer's encoding of a vocabulary: tokens of all n-grams grouped by n, the
    pool offset where each n starts (from n = 1), and the output column of each n-gram."""
    by_length: dict[int, list[tuple[list[str], int]]] = {}
    for ngram, column in sorted(vocabulary.items(), key=lambda item: item[1]):
        tokens = path.split(ngram)
        by_length.setdefault(len(tokens), []).append((tokens, column))
    low, high = path.ngram_range
    if not set(by_length) <= set(range(low, high + 1)):
        raise ValueError(
            f"{path.name}: vocabulary n-gram lengths {sorted(by_length)} escape {path.ngram_range}"
        )
    pool: list[str] = []
    counts: list[int] = []
    indexes: list[int] = []
    for n in range(1, high + 1):
        counts.append(len(pool))
        for tokens, column in by_length.get(n, []):
            pool.extend(tokens)
            indexes.append(column)
    return pool, counts, indexes
