"""The ``lite`` L2 model: TF-IDF features with four linear heads, exported as one ONNX graph.

``build_lite(out_dir)`` regenerates the corpus, trains on the train split, picks the threshold
on the validation split, measures the test split with the exported graph and writes
``model.onnx`` and ``manifest.json``. Everything is seeded and nothing reads the clock, so two
builds with the same seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import scipy.sparse as sp
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # ships no py.typed

from l2model.artifacts import default_lite_dir
from l2model.contract import (
    CONTEXTS,
    FAMILIES,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_BINARY,
    OUTPUT_CONTEXT,
    OUTPUT_FAMILY,
    OUTPUT_SEVERITY,
    OUTPUTS,
    Manifest,
    ModelInput,
)
from l2model.corpus import DEFAULT_SIZE, generate_corpus, split_corpus, write_split
from l2model.evaluation import corpus_report, threat_scores
from l2model.features import Graph, TextFeaturiser
from l2model.golden import refuse_golden
from l2model.record import TrainingRecord
from l2model.runtime import TextFeed, run_session, session_for
from l2model.tokens import default_paths
from l2model.training import (
    CLASS_WEIGHT,
    manifest_bytes,
    threshold_selection,
    training_summary,
    validation_threshold,
)

__all__ = [
    "LiteModel",
    "build_lite",
    "default_lite_dir",
    "manifest_bytes",
    "run_graph",
    "session_for",
    "train_lite",
]

NAME = "l2-lite"
VERSION = "1.0.0"
# Fixed, not the wall clock, so that a rebuild is byte-identical; move it with VERSION.
CREATED_AT = datetime(2025, 12, 1, tzinfo=UTC)
REBUILD = "python -m l2model.lite --out l2model/artifacts/lite --seed 0"
INPUT_NAME = "text"

BINARY_C = 8.0
MULTICLASS_C = 8.0
RIDGE_ALPHA = 1.0
MAX_ITER = 3000

OPSET = 20  # ReduceL2 with axes as an input needs >= 18; onnxruntime >= 1.17 runs 20
IR_VERSION = 10
BATCH = 256
PARITY_TOLERANCE = 1e-4


@dataclass
class LiteModel:
    """A trained featuriser and its heads, runnable here (scikit-learn) or as a graph."""

    featuriser: TextFeaturiser
    binary: LogisticRegression
    family: LogisticRegression
    severity: Ridge
    context: LogisticRegression

    def predict(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's four outputs, computed by scikit-learn (float64)."""
        features = self.featuriser.transform(texts)
        margin = self.binary.decision_function(features)
        return {
            OUTPUT_BINARY: np.stack([np.zeros_like(margin), margin], axis=1),
            OUTPUT_FAMILY: self.family.decision_function(features),
            OUTPUT_SEVERITY: np.clip(self.severity.predict(features), 0.0, 1.0)[:, None],
            OUTPUT_CONTEXT: self.context.decision_function(features),
        }

    def to_onnx(self) -> onnx.ModelProto:
        graph = Graph()
        features = self.featuriser.to_onnx(graph, INPUT_NAME)

        def head(name: str, coef: np.ndarray, intercept: np.ndarray, output: str) -> str:
            weights = graph.const(f"{name}_weights", np.ascontiguousarray(coef.T, np.float32))
            product = graph.node("MatMul", [features, weights], f"{name}_product")
            bias = graph.const(f"{name}_bias", np.asarray(intercept, np.float32))
            return graph.node("Add", [product, bias], output)

        # The binary head is one logit z; [0, z] makes softmax()[:, 1] equal sigmoid(z).
        margin = head("binary", self.binary.coef_, self.binary.intercept_, "binary_margin")
        zero = graph.const("zero", np.array(0.0, np.float32))
        zeros = graph.node("Mul", [margin, zero], "binary_zeros")
        binary = graph.node("Concat", [zeros, margin], OUTPUT_BINARY, axis=1)
        family = head("family", self.family.coef_, self.family.intercept_, OUTPUT_FAMILY)
        raw_severity = head(
            "severity",
            self.severity.coef_[None, :],
            np.array([self.severity.intercept_]),
            "severity_raw",
        )
        one = graph.const("one", np.array(1.0, np.float32))
        severity = graph.node("Clip", [raw_severity, zero, one], OUTPUT_SEVERITY)
        context = head("context", self.context.coef_, self.context.intercept_, OUTPUT_CONTEXT)
        if (binary, family, severity, context) != OUTPUTS:
            raise RuntimeError(
                f"graph output names collided: {(binary, family, severity, context)}"
            )
        widths = dict(zip(OUTPUTS, (2, len(FAMILIES), 1, len(CONTEXTS)), strict=True))
        onnx_graph = helper.make_graph(
            graph.nodes,
            NAME,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.STRING, ["N", 1])],
            [
                helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", widths[name]])
                for name in OUTPUTS
            ],
            initializer=graph.initializers,
        )
        model = helper.make_model(
            onnx_graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
            producer_name="l2model",
            doc_string=f"{NAME} {VERSION}",
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def train_lite(
    train: Sequence[TrainingRecord], *, vocabulary_texts: Sequence[str] | None = None
) -> LiteModel:
    """Fits the featuriser (vocabulary and IDF) on ``vocabulary_texts`` when given, else on
    the training texts, then the heads on ``train`` weighted by ``weight_multiplier``.
    Retraining keeps the base vocabulary this way while the heads learn new examples
    (the incremental mode of workers/retraining/training.py)."""
    texts = [r.text for r in train]
    refuse_golden(texts, what="the lite model's training set")
    weights = np.array([r.weight_multiplier for r in train])
    featuriser = TextFeaturiser(default_paths())
    # One thread: with two, the solvers' sums come out in a different order and the weights
    # differ in the last bits, so artifacts would depend on the build machine's core count.
    with threadpool_limits(limits=1):
        if vocabulary_texts is None:
            features: sp.csr_matrix = featuriser.fit_transform(texts)
        else:
            featuriser.fit_transform(vocabulary_texts)
            features = featuriser.transform(texts)

        def classifier(
            target: list[int], c: float, class_weight: dict[int, float] | None
        ) -> LogisticRegression:
            model = LogisticRegression(C=c, max_iter=MAX_ITER, class_weight=class_weight)
            return model.fit(features, np.array(target), sample_weight=weights)

        binary = classifier([r.label for r in train], BINARY_C, CLASS_WEIGHT)
        family = classifier([r.family_idx for r in train], MULTICLASS_C, None)
        context = classifier([r.context_idx for r in train], MULTICLASS_C, None)
        severity = Ridge(alpha=RIDGE_ALPHA).fit(
            features, np.array([r.severity_score for r in train]), sample_weight=weights
        )
    for head, size in ((family, len(FAMILIES)), (context, len(CONTEXTS))):
        if list(head.classes_) != list(range(size)):
            raise ValueError(f"training split lacks classes: has {list(head.classes_)}")
    return LiteModel(featuriser, binary, family, severity, context)


def run_graph(session: ort.InferenceSession, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The four outputs of a text-input graph on ``texts``, in batches to bound memory."""
    return run_session(session, TextFeed(INPUT_NAME), texts, BATCH)


def max_parity_error(
    model: LiteModel, session: ort.InferenceSession, texts: Sequence[str]
) -> float:
    """Largest gap between scikit-learn and the graph, in probabilities and severity."""
    expected, actual = model.predict(texts), run_graph(session, texts)

    def softmax(logits: np.ndarray) -> np.ndarray:
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return result

    gaps = [
        np.abs(threat_scores(expected[OUTPUT_BINARY]) - threat_scores(actual[OUTPUT_BINARY])),
        np.abs(softmax(expected[OUTPUT_FAMILY]) - softmax(actual[OUTPUT_FAMILY])),
        np.abs(softmax(expected[OUTPUT_CONTEXT]) - softmax(actual[OUTPUT_CONTEXT])),
        np.abs(expected[OUTPUT_SEVERITY] - actual[OUTPUT_SEVERITY]),
    ]
    return float(max(gap.max() for gap in gaps))


def build_lite(
    out_dir: Path, seed: int = 0, *, size: int = DEFAULT_SIZE, data_dir: Path | None = None
) -> Manifest:
    """Trains the lite model and writes ``model.onnx`` and ``manifest.json`` to ``out_dir``
    (and the corpus splits as JSONL to ``data_dir`` when given)."""
    split = split_corpus(generate_corpus(size, seed), seed)
    if data_dir is not None:
        write_split(data_dir, split)
    model = train_lite(split.train)
    model_bytes = model.to_onnx().SerializeToString()
    # One thread here too, so the reported figures do not depend on the build machine.
    session = session_for(model_bytes, threads=1)
    gap = max_parity_error(model, session, [r.text for r in split.test])
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX graph departs from scikit-learn by {gap:.2e}")

    validation = run_graph(session, [r.text for r in split.validation])
    threshold = validation_threshold(split.validation, validation)
    test = run_graph(session, [r.text for r in split.test])
    manifest = Manifest(
        name=NAME,
        version=VERSION,
        kind="lite",
        input=ModelInput(kind="text", name=INPUT_NAME),
        threshold=threshold,
        created_at=CREATED_AT,
        model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        rebuild=REBUILD,
        training_data=training_summary(split, size, seed),
        features={
            path.name: {
                "tokens": "characters and whitespace runs" if path.name == "char" else "words",
                "ngram_range": list(path.ngram_range),
                "features": model.featuriser.widths[path.name],
            }
            for path in model.featuriser.paths
        },
        heads={
            "binary": {
                "model": "LogisticRegression",
                "C": BINARY_C,
                "class_weight": [CLASS_WEIGHT[0], CLASS_WEIGHT[1]],
            },
            "family": {"model": "LogisticRegression (multinomial)", "C": MULTICLASS_C},
            "severity": {"model": "Ridge, clipped to [0, 1]", "alpha": RIDGE_ALPHA},
            "context": {"model": "LogisticRegression (multinomial)", "C": MULTICLASS_C},
            "sample_weight": "weight_multiplier",
        },
        threshold_selection=threshold_selection(split.validation, validation, threshold),
        metrics={"test": corpus_report(split.test, test, threshold)},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(model_bytes)
    (out_dir / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m l2model.lite", description=__doc__)
    parser.add_argument("--out", type=Path, default=default_lite_dir())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--data-dir", type=Path, default=None, help="also write the splits here")
    args = parser.parse_args(argv)
    manifest = build_lite(args.out, args.seed, size=args.size, data_dir=args.data_dir)
    print(manifest_bytes(manifest).decode())


if __name__ == "__main__":
    main()
