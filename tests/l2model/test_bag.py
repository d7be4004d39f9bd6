"""The embedding bag computed beside onnxruntime: the same outputs as the whole graph, and a
graph that does not start with the bag is run whole."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from l2model.artifacts import default_fast_dir
from l2model.bag import Bag, split_bag
from l2model.contract import MODEL_FILE, NGRAM_VALUES, OUTPUT_BINARY, OUTPUTS, Manifest
from l2model.corpus import CorpusSplit
from l2model.evaluation import threat_scores
from l2model.fast import PARITY_TOLERANCE
from l2model.golden import load_golden
from l2model.memory import strip_memory
from l2model.runtime import L2Model, NgramFeed, feed_for, run_session, session_for
from tests.l2model.test_fast import UNUSUAL

# Sums of a few hundred float32 products, in another order than onnxruntime's MatMul: the
# logits differ by a few 1e-6 of their size.
TOLERANCE = PARITY_TOLERANCE


def whole_graph(model_dir: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The four outputs of the graph as written, from the padded feed."""
    feed = feed_for(model_dir, Manifest.read(model_dir))
    return run_session(session_for(model_dir / MODEL_FILE, threads=1), feed, texts, 64)


def loaded(model_dir: Path, texts: Sequence[str]) -> tuple[L2Model, dict[str, np.ndarray]]:
    """The four outputs as a scorer computes them."""
    model = L2Model.load(model_dir, threads=1)
    outputs = run_session(model._session, model._feed, texts, 256)
    return model, outputs


def assert_same(
    whole: dict[str, np.ndarray], split: dict[str, np.ndarray], threshold: float
) -> None:
    for name in OUTPUTS:
        np.testing.assert_allclose(split[name], whole[name], rtol=0, atol=TOLERANCE, err_msg=name)
    flagged = threat_scores(whole[OUTPUT_BINARY]) >= threshold
    assert (threat_scores(split[OUTPUT_BINARY]) >= threshold).tolist() == flagged.tolist()


def test_the_bag_sums_each_rows_weighted_columns() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(50, 6)).astype(np.float32)
    dense = np.zeros((4, 50), np.float32)
    dense[0, [3, 7, 49]] = [0.5, -1.0, 2.0]
    dense[2, [0]] = [1.5]
    dense[3, [10, 11]] = [3.0, 4.0]
    rows, columns = np.nonzero(dense)
    indptr = np.searchsorted(rows, np.arange(5)).astype(np.int64)
    bag = Bag(weights, "sums", ("norms",))
    fed = bag.feed(indptr, columns.astype(np.int64), dense[rows, columns])
    np.testing.assert_allclose(fed["sums"], dense @ weights, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fed["norms"], np.linalg.norm(dense, axis=1, keepdims=True))
    assert fed["sums"][1].tolist() == [0.0] * 6


@pytest.mark.parametrize("name", ["test split", "golden set"])
def test_the_default_model_scores_as_its_whole_graph(name: str, split: CorpusSplit) -> None:
    texts = [r.text for r in split.test] if name == "test split" else []
    texts += [p.text for p in load_golden().probes] if name == "golden set" else UNUSUAL
    model, outputs = loaded(default_fast_dir(), texts)
    assert isinstance(model._feed, NgramFeed) and model._feed.bag is not None
    # The rest of the graph reads the bag's sums, the features' norms and the memory's dots.
    assert {i.name for i in model._session.get_inputs()} == {
        model._feed.bag.sums,
        *model._feed.bag.norms,
        "memory_dots",
    }
    assert_same(whole_graph(default_fast_dir(), texts), outputs, model.threshold)


def copy_with_graph(model_dir: Path, graph: onnx.ModelProto, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    out.mkdir()
    for path in model_dir.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    (out / MODEL_FILE).write_bytes(graph.SerializeToString())
    return out


def test_a_graph_without_a_memory_splits_without_norms(split: CorpusSplit, tmp_path: Path) -> None:
    graph = strip_memory(onnx.load(default_fast_dir() / MODEL_FILE))
    found = split_bag(graph)
    assert found is not None and found.bag.norms == ()
    model_dir = copy_with_graph(default_fast_dir(), graph, tmp_path)
    (model_dir / "prototypes.npz").unlink()
    texts = [r.text for r in split.test[:500]] + UNUSUAL
    model, outputs = loaded(model_dir, texts)
    assert model._feed.bag is not None  # type: ignore[attr-defined]
    assert_same(whole_graph(model_dir, texts), outputs, model.threshold)


def test_a_graph_that_reads_the_values_another_way_runs_whole(
    split: CorpusSplit, tmp_path: Path
) -> None:
    """A graph whose start is not the bag (here the values scaled by one before the product)
    is neither split nor refused: the scorer runs it whole from the padded feed."""
    graph = onnx.load(default_fast_dir() / MODEL_FILE)
    copies = [n for n in graph.graph.node if n.op_type == "Identity" and n.input[0] == NGRAM_VALUES]
    assert len(copies) == 1
    one = numpy_helper.from_array(np.array(1.0, np.float32), "scale_one")
    graph.graph.initializer.append(one)
    scaled = helper.make_node("Mul", [NGRAM_VALUES, "scale_one"], list(copies[0].output))
    index = list(graph.graph.node).index(copies[0])
    graph.graph.node.remove(copies[0])
    graph.graph.node.insert(index, scaled)
    onnx.checker.check_model(graph)
    assert split_bag(graph) is None
    model_dir = copy_with_graph(default_fast_dir(), graph, tmp_path)
    texts = [r.text for r in split.test[:300]] + UNUSUAL
    model, outputs = loaded(model_dir, texts)
    assert model._feed.bag is None  # type: ignore[attr-defined]
    assert_same(whole_graph(model_dir, texts), outputs, model.threshold)
