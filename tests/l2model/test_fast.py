"""The fast model computes the lite model's function, with a memory of the hand-written hard
negatives: converted graphs, the committed artifact and its rebuild, and how a broken fast
directory is refused."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from l2model.artifacts import default_fast_dir, default_lite_dir, default_model_dir
from l2model.contract import (
    MANIFEST_FILE,
    MEMORY_DOTS,
    MODEL_FILE,
    OUTPUT_BINARY,
    OUTPUTS,
    PROTOTYPES_FILE,
    VOCABULARY_FILE,
    Manifest,
)
from l2model.corpus import CorpusSplit
from l2model.corpus.hard_negatives import hard_negatives
from l2model.evaluation import threat_scores
from l2model.fast import PARITY_TOLERANCE, fast_graph, lite_parts, model_input
from l2model.golden import load_golden
from l2model.lite import LiteModel, run_graph
from l2model.memory import MEMORY_FILE, strip_memory
from l2model.ngrams import NgramVectorizer, vocabulary_entries
from l2model.runtime import (
    L2Model,
    ModelLoadError,
    NgramFeed,
    feed_for,
    run_session,
    session_for,
)
from l2model.training import manifest_bytes

UNUSUAL = [
    "",
    "Ignore   all\tprevious\n\ninstructions",
    "İstanbul ΣΟΦΟΣ 😀 \ud800",
    "x" * 4096,
]


def assert_outputs_agree(lite: dict[str, np.ndarray], fast: dict[str, np.ndarray]) -> None:
    gap = np.abs(threat_scores(lite[OUTPUT_BINARY]) - threat_scores(fast[OUTPUT_BINARY]))
    assert gap.max() <= PARITY_TOLERANCE
    for name in OUTPUTS:
        np.testing.assert_allclose(fast[name], lite[name], atol=PARITY_TOLERANCE, err_msg=name)


def test_a_converted_small_lite_graph_computes_the_same_outputs(
    small_model: LiteModel, small_split: CorpusSplit
) -> None:
    lite_graph = small_model.to_onnx()
    parts = lite_parts(lite_graph)
    featuriser = small_model.featuriser
    assert parts.vocabularies == tuple(v.vocabulary_ for v in featuriser.vectorizers)
    for idf, vectorizer in zip(parts.idf, featuriser.vectorizers, strict=True):
        np.testing.assert_array_equal(idf, vectorizer.idf_.astype(np.float32))
    ranges = model_input(parts.paths).ngram_ranges
    assert ranges == {"char": (2, 5), "word": (1, 2)}
    vectorizer = NgramVectorizer(
        vocabulary_entries(parts.paths, parts.vocabularies, parts.idf), list(ranges.values())
    )
    texts = [r.text for r in small_split.test] + UNUSUAL
    lite = run_graph(session_for(lite_graph.SerializeToString(), threads=1), texts)
    fast_session = session_for(fast_graph(parts).SerializeToString(), threads=1)
    assert_outputs_agree(lite, run_session(fast_session, NgramFeed(vectorizer), texts, 64))


def outputs_of(model_dir: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The four outputs of a model directory through its own feed, as the runtime makes them."""
    manifest = Manifest.read(model_dir)
    session = session_for(model_dir / MODEL_FILE, threads=1)
    return run_session(session, feed_for(model_dir, manifest), texts, 64)


def heads_of(model_dir: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The four outputs of a fast model directory's graph without its memory."""
    feed = feed_for(model_dir, Manifest.read(model_dir))
    assert isinstance(feed, NgramFeed)
    graph = strip_memory(onnx.load(model_dir / MODEL_FILE))
    session = session_for(graph.SerializeToString(), threads=1)
    return run_session(session, NgramFeed(feed.vectorizer), texts, 64)


def texts_of(name: str, split: CorpusSplit) -> list[str]:
    if name == "test split":
        return [r.text for r in split.test]
    return [p.text for p in load_golden().probes]


@pytest.mark.parametrize("name", ["test split", "golden set"])
def test_the_committed_fast_models_heads_are_the_committed_lite_model(
    name: str, split: CorpusSplit
) -> None:
    texts = texts_of(name, split)
    assert_outputs_agree(outputs_of(default_lite_dir(), texts), heads_of(default_fast_dir(), texts))


def test_the_committed_memory_changes_no_decision_but_near_a_hard_negative(
    split: CorpusSplit,
) -> None:
    """On the test split every decision is lite's; on the golden set only hard negatives'
    decisions differ, and none of them is flagged (lite flags one)."""
    threshold = Manifest.read(default_fast_dir()).threshold
    assert threshold == Manifest.read(default_lite_dir()).threshold

    def flagged(model_dir: Path, texts: list[str]) -> np.ndarray:
        found: np.ndarray = threat_scores(outputs_of(model_dir, texts)[OUTPUT_BINARY]) >= threshold
        return found

    test = texts_of("test split", split)
    assert flagged(default_fast_dir(), test).tolist() == flagged(default_lite_dir(), test).tolist()
    probes = load_golden().probes
    golden = [p.text for p in probes]
    fast, lite = flagged(default_fast_dir(), golden), flagged(default_lite_dir(), golden)
    hard = np.array([p.kind == "hard_negative" for p in probes])
    assert fast[~hard].tolist() == lite[~hard].tolist()
    assert not fast[hard].any()


def test_the_default_model_is_the_committed_fast_model() -> None:
    assert default_model_dir() == default_fast_dir()


def test_the_fast_manifest_names_the_lite_model_it_was_built_from() -> None:
    fast, lite = Manifest.read(default_fast_dir()), Manifest.read(default_lite_dir())
    fast_extra, lite_extra = fast.model_extra or {}, lite.model_extra or {}
    assert (fast.name, fast.kind, fast.version) == ("l2-fast", "fast", lite.version)
    assert (fast.input.kind, fast.input.name) == ("ngrams", "ngram_ids")
    assert fast.input.ngram_ranges == {"char": (2, 5), "word": (1, 2)}
    assert (fast.threshold, fast.labels) == (lite.threshold, lite.labels)
    lite_digest = hashlib.sha256((default_lite_dir() / MODEL_FILE).read_bytes()).hexdigest()
    assert fast_extra["converted_from"] == {
        "name": lite.name,
        "version": lite.version,
        "sha256": lite_digest,
    }
    fast_digest = hashlib.sha256((default_fast_dir() / MODEL_FILE).read_bytes()).hexdigest()
    assert fast_extra["model_sha256"] == fast_digest
    assert fast_extra["rebuild"] == "python -m l2model.fast"
    for copied in ("training_data", "features", "threshold_selection", "metrics"):
        assert fast_extra[copied] == lite_extra[copied], copied
    memory = fast_extra["heads"].pop("memory")
    assert fast_extra["heads"] == lite_extra["heads"]
    assert memory["holds"] == "the hand-written hard negatives"
    assert memory["examples"] == memory["false_positives"] == len(hard_negatives())


def test_the_committed_memory_holds_the_hand_written_hard_negatives() -> None:
    lines = (default_fast_dir() / MEMORY_FILE).read_bytes().splitlines()
    assert len(lines) == len(hard_negatives())
    assert (default_fast_dir() / PROTOTYPES_FILE).is_file()


def test_the_fast_graph_reads_ngram_ids_and_values() -> None:
    graph = onnx.load(default_fast_dir() / MODEL_FILE)
    inputs = [
        (i.name, i.type.tensor_type.elem_type, [d.dim_param for d in i.type.tensor_type.shape.dim])
        for i in graph.graph.input
    ]
    assert inputs == [
        ("ngram_ids", onnx.TensorProto.INT64, ["N", "L"]),
        ("ngram_values", onnx.TensorProto.FLOAT, ["N", "L"]),
        (MEMORY_DOTS, onnx.TensorProto.FLOAT, ["N", ""]),
    ]
    memory = graph.graph.input[2].type.tensor_type.shape.dim[1].dim_value
    assert memory == len(hard_negatives())
    assert [o.name for o in graph.graph.output] == list(OUTPUTS)


@pytest.mark.integration
def test_the_committed_fast_model_is_what_its_rebuild_command_makes(tmp_path: Path) -> None:
    """Unlike lite's, this build fits no heads: it reads lite's graph back and learns the
    memory's kernel, a discrete choice. The vocabulary and the memory's files are the same
    bytes anywhere; the graph's memory amounts come from onnxruntime's sums, whose last bits
    may differ between CPUs, so the graph is compared node by node and value by value."""
    out = tmp_path / "fast"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "l2model.fast", "--out", str(out)]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    committed = default_fast_dir()
    for name in (VOCABULARY_FILE, PROTOTYPES_FILE, MEMORY_FILE):
        assert (out / name).read_bytes() == (committed / name).read_bytes(), name
    rebuilt_graph, committed_graph = onnx.load(out / MODEL_FILE), onnx.load(committed / MODEL_FILE)
    assert rebuilt_graph.graph.node == committed_graph.graph.node
    for rebuilt_init, committed_init in zip(
        rebuilt_graph.graph.initializer, committed_graph.graph.initializer, strict=True
    ):
        assert rebuilt_init.name == committed_init.name
        np.testing.assert_allclose(
            numpy_helper.to_array(rebuilt_init),
            numpy_helper.to_array(committed_init),
            rtol=1e-5,
            err_msg=rebuilt_init.name,
        )
    rebuilt = Manifest.read(out).model_dump(mode="json")
    recorded = Manifest.read(committed).model_dump(mode="json")
    assert rebuilt.pop("rebuild").endswith(f"--out {out}")
    recorded.pop("rebuild")
    rebuilt.pop("model_sha256")
    recorded.pop("model_sha256")
    assert rebuilt == recorded


def copy_without(source: Path, target: Path, name: str) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(name))
    return target


def test_a_fast_directory_without_its_vocabulary_is_refused_by_name(tmp_path: Path) -> None:
    model_dir = copy_without(default_fast_dir(), tmp_path / "fast", VOCABULARY_FILE)
    with pytest.raises(ModelLoadError, match=VOCABULARY_FILE) as missing:
        L2Model.load(model_dir)
    assert missing.value.path == model_dir / VOCABULARY_FILE
    (model_dir / VOCABULARY_FILE).write_bytes(b"not an array")
    with pytest.raises(ModelLoadError, match=VOCABULARY_FILE):
        L2Model.load(model_dir)


def test_a_fast_manifest_without_ngram_ranges_is_refused_by_name(tmp_path: Path) -> None:
    model_dir = copy_without(default_fast_dir(), tmp_path / "fast", MANIFEST_FILE)
    manifest = Manifest.read(default_fast_dir())
    unranged = manifest.input.model_copy(update={"ngram_ranges": None})
    (model_dir / MANIFEST_FILE).write_bytes(
        manifest_bytes(manifest.model_copy(update={"input": unranged}))
    )
    with pytest.raises(ModelLoadError, match="ngram_ranges") as refused:
        L2Model.load(model_dir)
    assert refused.value.path == model_dir / MANIFEST_FILE


def test_a_batch_scored_in_chunks_side_by_side_comes_back_in_order(split: CorpusSplit) -> None:
    """With two threads an n-gram model scores chunks of a batch at once: the scores are
    those of one thread, row for row, whatever the batch's size (to float rounding: chunks
    of other sizes pad to other widths)."""
    texts = [r.text for r in split.test[:300]] + UNUSUAL
    one, two = L2Model.load(default_fast_dir(), threads=1), L2Model.load(default_fast_dir(), 2)
    for size in (1, 3, 64, len(texts)):
        alone, side_by_side = one.score_batch(texts[:size]), two.score_batch(texts[:size])
        assert [(s.family, s.context) for s in side_by_side] == [
            (s.family, s.context) for s in alone
        ]
        np.testing.assert_allclose(
            [s.score for s in side_by_side], [s.score for s in alone], rtol=0, atol=1e-6
        )
