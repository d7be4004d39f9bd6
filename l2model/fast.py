"""The ``fast`` L2 model: the lite model's function, computed in time proportional to the text,
with a memory of the hand-written hard negatives.

A lite graph (``l2model.lite``) is split in two: its fitted TF-IDF vectorizer (vocabulary
and idf) goes to ``ngrams.npy``, which ``l2model.ngrams`` applies outside the graph in one
compiled pass over the text, and its heads stay in a graph that gathers the weights of the
columns a prompt holds and sums them. Both halves cost in proportion to the prompt's
n-grams, not to the 64,000 columns of the vocabulary. Same vocabulary, idf, weights and
threshold: the two models' scores agree to float rounding (the build refuses to write one
that departs by more than ``PARITY_TOLERANCE``), which is why the fast model is no worse
than lite anywhere.

Inputs (``input.kind = "ngrams"``): ``ngram_ids`` int64 [N, L] (column numbers; the
vocabulary's size where a prompt has fewer than L) and ``ngram_values`` float32 [N, L]
(their TF-IDF values, L2-normalised per path). The graph names them ``features`` too, which
the memory of confirmed examples (``l2model.memory``) reads.

The committed model adds to lite's heads the memory every retrained candidate starts from:
the hand-written hard negatives, expert-confirmed benign prompts that sound like attacks
(docs/decisions/0025-fast-model.md). Lite flags one of the golden set's variants of them;
the memory pulls prompts close to a hard negative under the threshold and leaves every other
score as lite's.

    python -m l2model.fast   # --lite l2model/artifacts/lite --out l2model/artifacts/fast
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from l2model.contract import (
    CONTEXTS,
    FAMILIES,
    MANIFEST_FILE,
    MODEL_FILE,
    NGRAM_IDS,
    NGRAM_VALUES,
    OUTPUT_BINARY,
    OUTPUT_CONTEXT,
    OUTPUT_FAMILY,
    OUTPUT_SEVERITY,
    OUTPUTS,
    Manifest,
    ModelInput,
)
from l2model.corpus import CorpusSplit
from l2model.corpus.hard_negatives import hard_negatives
from l2model.evaluation import threat_scores
from l2model.features import Graph
from l2model.golden import refuse_golden
from l2model.memory import LearnedMemory, learn_memory
from l2model.ngrams import (
    PATHS,
    NgramVectorizer,
    vocabulary_entries,
    write_vocabulary,
)
from l2model.record import text_key
from l2model.runtime import NgramFeed, TextFeed, run_session, session_for
from l2model.tokens import TokenNgrams, default_paths
from l2model.training import manifest_bytes

NAME = "l2-fast"
TEXT = "text"  # the lite graph's input
FEATURES = "features"
MARGIN = "binary_margin"
HEADS = ("binary", "family", "severity", "context")
OPSET = 20
IR_VERSION = 10
PARITY_TOLERANCE = 1e-4
# The committed memory is learnt as the loop learns a candidate's, with the loop's defaults
# (L2LOOP_MEMORY_FEATURES_PER_EXAMPLE, L2LOOP_MEMORY_MARGIN, L2LOOP_RETRAIN_RECALL_TOLERANCE).
MEMORY_FEATURES_PER_EXAMPLE = 64
MEMORY_MARGIN = 1.0
MEMORY_RECALL_TOLERANCE = 0.005


@dataclass(frozen=True)
class LiteParts:
    """What a lite graph learnt: per path its vocabulary (n-gram -> column within the path)
    and idf, and each head's weights [V, k] and bias [k]."""

    paths: tuple[TokenNgrams, ...]
    vocabularies: tuple[dict[str, int], ...]
    idf: tuple[np.ndarray, ...]
    weights: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]


def _vocabulary(node: onnx.NodeProto, path: TokenNgrams) -> dict[str, int]:
    """The n-grams a lite graph's TfIdfVectorizer counts, joined as the path joins them."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    pool = [s.decode() for s in attrs["pool_strings"]]
    starts = [*attrs["ngram_counts"], len(pool)]
    indexes = list(attrs["ngram_indexes"])
    ngrams: list[str] = []
    for n in range(1, len(starts)):
        group = pool[starts[n - 1] : starts[n]]
        ngrams.extend(path.joiner.join(group[i : i + n]) for i in range(0, len(group), n))
    if len(ngrams) != len(indexes):
        raise ValueError(f"{path.name}: {len(ngrams)} n-grams for {len(indexes)} columns")
    return dict(zip(ngrams, indexes, strict=True))


def lite_parts(model: onnx.ModelProto) -> LiteParts:
    """Reads a lite graph (without a memory) back into its parts."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    counters = {n.output[0]: n for n in model.graph.node if n.op_type == "TfIdfVectorizer"}
    paths = default_paths()
    if tuple(p.name for p in paths) != PATHS:
        raise ValueError(f"lite paths {[p.name for p in paths]} are not {PATHS}")
    return LiteParts(
        paths=paths,
        vocabularies=tuple(_vocabulary(counters[f"{p.name}_tf"], p) for p in paths),
        idf=tuple(consts[f"{p.name}_idf"].astype(np.float32) for p in paths),
        weights={h: consts[f"{h}_weights"].astype(np.float32) for h in HEADS},
        biases={h: consts[f"{h}_bias"].astype(np.float32).reshape(-1) for h in HEADS},
    )


def fast_graph(parts: LiteParts) -> onnx.ModelProto:
    """The graph over ``ngram_ids``/``ngram_values`` computing the lite graph's heads."""
    graph = Graph()
    # The heads' weights of a column in one row (onnxruntime's Gather costs per call and per
    # element gathered); the padding column's row is zero.
    fitted = np.hstack([parts.weights[h] for h in HEADS])
    table = np.vstack([fitted, np.zeros((1, fitted.shape[1]))]).astype(np.float32)
    rows = graph.node("Gather", [graph.const("columns", table), NGRAM_IDS], "rows")
    features = graph.node("Identity", [NGRAM_VALUES], FEATURES)
    # [N, 1, L] @ [N, L, H]: each prompt's features times its columns' rows.
    axis = graph.const("axis", np.array([1], np.int64))
    summed = graph.node(
        "MatMul", [graph.node("Unsqueeze", [features, axis], "features_row"), rows], "summed"
    )
    bias = np.concatenate([parts.biases[h] for h in HEADS]).astype(np.float32)
    heads = graph.node(
        "Add",
        [graph.node("Squeeze", [summed, axis], "summed_flat"), graph.const("bias", bias)],
        "heads",
    )

    def head(output: str, start: int, width: int) -> str:
        begin = graph.const(f"{output}_begin", np.array([start], np.int64))
        end = graph.const(f"{output}_end", np.array([start + width], np.int64))
        return graph.node("Slice", [heads, begin, end, axis], output)

    widths = [parts.weights[h].shape[1] for h in HEADS]
    offsets = np.cumsum([0, *widths])
    margin = head(MARGIN, offsets[0], widths[0])
    zero = graph.const("zero", np.array(0.0, np.float32))
    one = graph.const("one", np.array(1.0, np.float32))
    binary = graph.node(
        "Concat", [graph.node("Mul", [margin, zero], "binary_zeros"), margin], OUTPUT_BINARY, axis=1
    )
    family = head(OUTPUT_FAMILY, offsets[1], widths[1])
    severity = graph.node(
        "Clip", [head("severity_raw", offsets[2], widths[2]), zero, one], OUTPUT_SEVERITY
    )
    context = head(OUTPUT_CONTEXT, offsets[3], widths[3])
    if (binary, family, severity, context) != OUTPUTS or features != FEATURES:
        raise RuntimeError(f"graph output names collided: {(binary, family, severity, context)}")
    output_widths = dict(zip(OUTPUTS, (2, len(FAMILIES), 1, len(CONTEXTS)), strict=True))
    onnx_graph = helper.make_graph(
        graph.nodes,
        NAME,
        [
            helper.make_tensor_value_info(NGRAM_IDS, TensorProto.INT64, ["N", "L"]),
            helper.make_tensor_value_info(NGRAM_VALUES, TensorProto.FLOAT, ["N", "L"]),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", w])
            for n, w in output_widths.items()
        ],
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="l2model"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def model_input(paths: Sequence[TokenNgrams]) -> ModelInput:
    return ModelInput(
        kind="ngrams", name=NGRAM_IDS, ngram_ranges={p.name: p.ngram_range for p in paths}
    )


@dataclass(frozen=True)
class FastForm:
    """A lite graph's fast form: the graph, the vocabulary entries beside it, its input."""

    model: onnx.ModelProto
    entries: np.ndarray
    input: ModelInput

    def threat_scores(self, texts: Sequence[str]) -> np.ndarray:
        """P(threat) of ``texts``, as the scorer computes it."""
        ranges = list((self.input.ngram_ranges or {}).values())
        feed = NgramFeed(NgramVectorizer(self.entries, ranges))
        session = session_for(self.model.SerializeToString(), threads=1)
        return threat_scores(run_session(session, feed, texts)[OUTPUT_BINARY])


def hard_negative_memory(form: FastForm, threshold: float, split: CorpusSplit) -> LearnedMemory:
    """The fast form with a memory of the hand-written hard negatives, its kernel chosen under
    the loop's constraints on the prompts of known label: the corpus's validation split and
    the hard negatives (never the golden set, which judges the result)."""
    examples = hard_negatives()
    refuse_golden([r.text for r in examples], what="the committed model's memory")
    known = {text_key(r.text): r for r in (*split.validation, *examples)}
    ranges = list((form.input.ngram_ranges or {}).values())
    return learn_memory(
        form.model,
        NgramFeed(NgramVectorizer(form.entries, ranges)),
        threshold,
        examples,
        [r.text for r in known.values()],
        [r.label for r in known.values()],
        features_per_example=MEMORY_FEATURES_PER_EXAMPLE,
        margin=MEMORY_MARGIN,
        recall_tolerance=MEMORY_RECALL_TOLERANCE,
    )


def fast_form(lite: onnx.ModelProto) -> FastForm:
    """The fast form of a lite graph (one without a memory)."""
    parts = lite_parts(lite)
    entries = vocabulary_entries(parts.paths, parts.vocabularies, parts.idf)
    return FastForm(fast_graph(parts), entries, model_input(parts.paths))


def parity_gap(form: FastForm, lite: ort.InferenceSession, texts: Sequence[str]) -> float:
    """The largest difference in P(threat) over ``texts`` between the fast form and the lite
    graph it came from (run by ``lite``)."""
    expected = threat_scores(run_session(lite, TextFeed(TEXT), texts)[OUTPUT_BINARY])
    return float(np.abs(form.threat_scores(texts) - expected).max(initial=0.0))


def build_fast(lite_dir: Path, out_dir: Path, split: CorpusSplit, *, rebuild: str) -> Manifest:
    """Writes the fast form of the lite model in ``lite_dir`` to ``out_dir``, checked to
    score ``split``'s test prompts as lite does, with the memory of the hand-written hard
    negatives; ``rebuild`` is the command that makes it again."""
    lite = Manifest.read(lite_dir)
    graph = onnx.load(lite_dir / MODEL_FILE)
    form = fast_form(graph)
    parity_texts = [r.text for r in split.test]
    gap = parity_gap(form, session_for(graph.SerializeToString(), threads=1), parity_texts)
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"the fast graph departs from the lite graph by {gap:.2e}")
    memory = hard_negative_memory(form, lite.threshold, split)
    model_bytes = memory.model.SerializeToString()
    extra = lite.model_extra or {}
    manifest = Manifest(
        name=NAME,
        version=lite.version,
        kind="fast",
        input=form.input,
        labels=lite.labels,
        threshold=lite.threshold,
        created_at=lite.created_at,
        model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        rebuild=rebuild,
        converted_from={
            "name": lite.name,
            "version": lite.version,
            "sha256": extra.get("model_sha256"),
        },
        training_data=extra.get("training_data"),
        features=extra.get("features"),
        heads={
            **extra.get("heads", {}),
            "memory": {
                "holds": "the hand-written hard negatives",
                **memory.summary.model_dump(mode="json", exclude={"trials"}),
            },
        },
        threshold_selection=extra.get("threshold_selection"),
        # Lite's figures: the memory moves none of the test split's decisions (a test says so).
        metrics=extra.get("metrics"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(model_bytes)
    write_vocabulary(out_dir, form.entries)
    memory.write(out_dir)
    (out_dir / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    from l2model.artifacts import default_fast_dir, default_lite_dir
    from l2model.corpus import DEFAULT_SIZE, generate_corpus, split_corpus

    parser = argparse.ArgumentParser(prog="python -m l2model.fast", description=__doc__)
    parser.add_argument("--lite", type=Path, default=default_lite_dir())
    parser.add_argument("--out", type=Path, default=default_fast_dir())
    args = parser.parse_args(argv)
    split = split_corpus(generate_corpus(DEFAULT_SIZE, 0), 0)
    command = "python -m l2model.fast" + (
        ""
        if (args.lite, args.out) == (default_lite_dir(), default_fast_dir())
        else f" --lite {args.lite} --out {args.out}"
    )
    manifest = build_fast(args.lite, args.out, split, rebuild=command)
    print(manifest_bytes(manifest).decode())


if __name__ == "__main__":
    main()
