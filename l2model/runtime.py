"""Loads a model directory and scores batches of prompts with onnxruntime.

The manifest's ``input.kind`` decides how prompts become the graph's input: ``text`` feeds
them as a string tensor, ``tokens`` runs the ``tokenizer.json`` beside the model first,
``ngrams`` finds the prompts' n-grams of the vocabulary in the ``ngrams.npy`` beside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError
from tokenizers import Tokenizer

from l2model.contract import (
    MANIFEST_FILE,
    MEMORY_DOTS,
    MODEL_FILE,
    NGRAM_IDS,
    NGRAM_VALUES,
    OUTPUTS,
    PROTOTYPES_FILE,
    TOKENIZER_FILE,
    VOCABULARY_FILE,
    Manifest,
)

if TYPE_CHECKING:
    # Imported when an ngrams model is loaded: numba costs about 100 MiB and 0.4 s, which a
    # process scoring with another kind (or not scoring) need not pay.
    from l2model.bag import Bag
    from l2model.ngrams import NgramVectorizer, PrototypeDots

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"

TOKEN_CHUNK = 8
# An n-gram batch pads every prompt to the one with the most n-grams; sorted by length,
# runs of this many keep the padding small and the per-call cost shared.
NGRAM_CHUNK = 64
# Without padding (the bag computed outside the graph) a longer run only shares the call's
# cost (about 80 µs) among more prompts.
BAG_CHUNK = 256

# A graph input builder: prompts in, named tensors out.
Feed = Callable[[Sequence[str]], dict[str, np.ndarray]]

_SURROGATE = re.compile("[\ud800-\udfff]")


class ModelScore(NamedTuple):
    # A named tuple: a frozen dataclass's __init__ cost about a microsecond a prompt.
    score: float
    family: str
    severity: float
    context: str


class ModelLoadError(ValueError):
    """A model directory that cannot be used; the message names the path and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def encodable(text: str) -> str:
    """``text`` with each lone surrogate (a JSON ``\\ud800`` escape decodes to one) replaced
    by U+FFFD: neither onnxruntime's string tensors nor ``tokenizers`` accept text that has
    no UTF-8 encoding, and one such prompt would fail its whole batch."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


class TextFeed:
    """Raw prompts as a string tensor [N, 1]: the graph carries its own featuriser."""

    def __init__(self, input_name: str) -> None:
        self.input_name = input_name

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        feed = np.array([encodable(text) for text in texts], dtype=object).reshape(-1, 1)
        return {self.input_name: feed}


class TokenFeed:
    """``input_ids`` and ``attention_mask`` int64 [N, T]: each prompt cut to ``max_tokens``
    (special tokens included), the batch padded to its longest prompt."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        # A tokenizer.json may pin its own padding (all-MiniLM-L6-v2's pads every prompt to
        # 128); padding to the batch's longest prompt keeps short batches cheap.
        padding = tokenizer.padding or {}
        tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]")
        )
        tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: Path, max_tokens: int) -> TokenFeed:
        return cls(Tokenizer.from_file(str(path)), max_tokens)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch([encodable(text) for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return {INPUT_IDS: ids, ATTENTION_MASK: mask}


class NgramFeed:
    """``ngram_ids`` and ``ngram_values`` [N, L]: each prompt's vocabulary columns and their
    TF-IDF values, padded with the column past the vocabulary (value and weights zero); and
    for a graph with a memory, ``memory_dots`` [N, m], their products with its prototypes.
    With ``bag``, the graph's embedding bag is computed here instead (``l2model.bag``) and
    its results are fed in place of the columns, to the rest of the graph."""

    def __init__(
        self,
        vectorizer: NgramVectorizer,
        memory: PrototypeDots | None = None,
        bag: Bag | None = None,
    ) -> None:
        self.vectorizer = vectorizer
        self.memory = memory
        self.bag = bag

    def bagged(self, bag: Bag) -> NgramFeed:
        return NgramFeed(self.vectorizer, self.memory, bag)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.vectorizer.transform([encodable(text) for text in texts])
        if self.bag is not None:
            feed = self.bag.feed(rows.indptr, rows.columns, rows.values)
        else:
            ids, values = rows.padded(self.vectorizer.columns)
            feed = {NGRAM_IDS: ids, NGRAM_VALUES: values}
        if self.memory is not None:
            feed[MEMORY_DOTS] = self.memory.dots(rows)
        return feed


def feed_for(model_dir: Path, manifest: Manifest) -> Feed:
    """Raises ModelLoadError naming the manifest when it lacks a field its input kind
    needs, or the file beside the graph that the kind reads when that file is unusable."""
    kind = manifest.input.kind
    if kind == "text":
        return TextFeed(manifest.input.name)
    if kind == "ngrams":
        ranges = manifest.input.ngram_ranges
        if ranges is None:
            raise ModelLoadError(
                model_dir / MANIFEST_FILE, "an 'ngrams' model needs input.ngram_ranges"
            )
        vocabulary = model_dir / VOCABULARY_FILE
        try:
            from l2model.ngrams import NgramVectorizer, PrototypeDots

            vectorizer = NgramVectorizer.from_dir(model_dir, list(ranges.values()))
        except Exception as exc:
            raise ModelLoadError(vocabulary, f"unusable ({exc})") from None
        memory = model_dir / PROTOTYPES_FILE
        if not memory.exists():
            return NgramFeed(vectorizer)
        try:
            return NgramFeed(vectorizer, PrototypeDots.read(memory, vectorizer.columns))
        except Exception as exc:
            raise ModelLoadError(memory, f"unusable ({exc})") from None
    max_tokens = manifest.input.max_tokens
    if max_tokens is None:
        raise ModelLoadError(model_dir / MANIFEST_FILE, "a 'tokens' model needs input.max_tokens")
    tokenizer = model_dir / TOKENIZER_FILE
    try:
        return TokenFeed.from_file(tokenizer, max_tokens)
    except Exception as exc:
        raise ModelLoadError(tokenizer, f"unusable ({exc})") from None


def run_session(
    session: ort.InferenceSession,
    feed: Feed,
    texts: Sequence[str],
    batch: int = 256,
    pool: Executor | None = None,
) -> dict[str, np.ndarray]:
    """The four outputs on ``texts``, in batches of ``batch`` (on ``pool``'s threads, when
    given). Prompts go in order of length so that a token batch pads to about its own length,
    and the rows come back in the order of ``texts``."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))

    def run(start: int) -> list[np.ndarray]:
        outputs: list[np.ndarray] = session.run(
            list(OUTPUTS), feed([texts[i] for i in order[start : start + batch]])
        )
        return outputs

    starts = range(0, len(texts), batch)
    # One chunk runs here: handing it to a thread only adds the handoff to its latency.
    chunks = list(
        pool.map(run, starts) if pool is not None and len(starts) > 1 else map(run, starts)
    )
    restore = np.argsort(np.array(order, dtype=np.int64), kind="stable")
    return {
        name: np.concatenate([chunk[k] for chunk in chunks])[restore]
        for k, name in enumerate(OUTPUTS)
    }


@cache
def _chunk_pool(threads: int) -> ThreadPoolExecutor:
    """Threads that score an n-gram model's chunks side by side, shared by every model of
    that many threads in the process (a hot reload loads a new model, not a new pool)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="l2-chunks")


def session_for(model: bytes | Path, threads: int = 2) -> ort.InferenceSession:
    """A CPU session over a serialised graph or a graph file."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _session_and_feed(graph: Path, feed: Feed, threads: int) -> tuple[ort.InferenceSession, Feed]:
    """The session over the graph, and the feed for it; for an n-gram graph that starts with
    an embedding bag, the session over the rest of the graph and a feed that computes the
    bag."""
    if isinstance(feed, NgramFeed):
        import onnx

        from l2model.bag import split_bag

        split = split_bag(onnx.load(graph))
        if split is not None:
            return session_for(split.rest.SerializeToString(), threads), feed.bagged(split.bag)
    return session_for(graph, threads), feed


def _check_memory(model_dir: Path, session: ort.InferenceSession, feed: Feed) -> None:
    """A graph that reads ``memory_dots`` and the ``prototypes.npz`` beside it agree on the
    memory's size; neither comes without the other."""
    if not isinstance(feed, NgramFeed):
        return
    wanted = {i.name: i.shape for i in session.get_inputs()}.get(MEMORY_DOTS)
    if wanted is None and feed.memory is None:
        return
    if wanted is None:
        raise ModelLoadError(model_dir / MODEL_FILE, f"has no memory for {PROTOTYPES_FILE}")
    if feed.memory is None:
        raise ModelLoadError(model_dir / PROTOTYPES_FILE, "missing: the graph has a memory")
    if wanted[1] != feed.memory.count:
        raise ModelLoadError(
            model_dir / PROTOTYPES_FILE,
            f"holds {feed.memory.count} prototypes, the graph's memory {wanted[1]}",
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


class L2Model:
    """One loaded model. ``score_batch`` is CPU-bound: call it from an executor thread."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        feed: Feed,
        workers: int = 1,
    ) -> None:
        """``workers`` > 1: chunks of a batch run side by side on that many threads."""
        self.model_dir = model_dir
        self.manifest = manifest
        self._session = session
        self._feed = feed
        self._workers = workers
        self._pool = _chunk_pool(workers) if workers > 1 else None

    @classmethod
    def load(cls, model_dir: Path, threads: int = 2) -> L2Model:
        """Raises ModelLoadError, naming the file and what is wrong, for any unusable dir."""
        if not model_dir.is_dir():
            raise ModelLoadError(model_dir, "no such model directory")
        manifest_path = model_dir / MANIFEST_FILE
        try:
            manifest = Manifest.read(model_dir)
        except FileNotFoundError:
            raise ModelLoadError(manifest_path, "missing") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ModelLoadError(manifest_path, f"invalid manifest ({problems})") from None
        feed = feed_for(model_dir, manifest)
        graph = model_dir / MODEL_FILE
        if not graph.is_file():
            raise ModelLoadError(graph, "missing")
        # An n-gram graph is a few small nodes: onnxruntime's threads inside one run cost
        # more than they share (2 threads scored 25,000 short prompts/s, 1 thread 37,000), so
        # ``threads`` runs chunks side by side instead, each featurised and scored alone.
        parallel = manifest.input.kind == "ngrams" and threads > 1
        try:
            session, feed = _session_and_feed(graph, feed, 1 if parallel else threads)
        except Exception as exc:
            raise ModelLoadError(graph, f"not a loadable ONNX graph ({exc})") from None
        missing = set(OUTPUTS) - {output.name for output in session.get_outputs()}
        if missing:
            raise ModelLoadError(graph, f"lacks the outputs {sorted(missing)}")
        _check_memory(model_dir, session, feed)
        return cls(model_dir, manifest, session, feed, threads if parallel else 1)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    def _chunk(self, count: int) -> int:
        # A token batch pads every prompt to its longest one, and the encoder's cost grows
        # with that length, so prompts of similar length run together, a few at a time: on
        # 2 cores, runs of 8 scored the corpus test split 2.7 times as fast as runs of 256.
        kind = self.manifest.input.kind
        if kind == "ngrams":
            # Enough chunks for every thread, however small the batch.
            bagged = isinstance(self._feed, NgramFeed) and self._feed.bag is not None
            return min(BAG_CHUNK if bagged else NGRAM_CHUNK, math.ceil(count / self._workers))
        return {"tokens": TOKEN_CHUNK, "ngrams": NGRAM_CHUNK}.get(kind, count)

    def score_batch(self, texts: Sequence[str]) -> list[ModelScore]:
        if not texts:
            return []
        outputs = run_session(self._session, self._feed, texts, self._chunk(len(texts)), self._pool)
        binary, family, severity, context = (outputs[name] for name in OUTPUTS)
        families = self.manifest.labels.family
        contexts = self.manifest.labels.context
        # Python floats and ints by whole columns: indexing numpy arrays one element at a
        # time cost more than a short prompt's whole graph.
        return [
            ModelScore(score, families[f], sev, contexts[c])
            for score, f, sev, c in zip(
                _softmax(binary)[:, 1].tolist(),
                family.argmax(axis=1).tolist(),
                np.clip(severity[:, 0], 0.0, 1.0).tolist(),
                context.argmax(axis=1).tolist(),
                strict=True,
            )
        ]
