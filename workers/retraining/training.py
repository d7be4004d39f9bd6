"""How a retraining run trains its candidate, in one of two modes (seeds: incremental training
guide, step 4; docs/decisions/0013-retraining-loop.md and 0019-memory-of-confirmed-examples.md):

- ``incremental`` (fewer than ``retrain_full_from`` new training examples): the incumbent's
  graph stays, and the dataset's confirmed examples join its memory (``l2model.memory``),
  which moves scores near them and nowhere else; the threshold stays the incumbent's. A few
  reports cannot teach a linear model a new boundary without moving every score that shares
  a feature with them (a language, a greeting, a length).
- ``full`` (the guide's full retraining): everything is refitted on base + the incumbent's
  memory + new, at the weights they were curated with; every hand-written hard negative is
  trained on, whichever base split it fell in, weighing at least
  ``retrain_hard_negative_weight`` (decision 0013); each new or remembered example brings
  counterparts, records of the opposite label in its style (``l2model.counterparts``). The
  threshold is chosen under a recall constraint
  (``l2model.training.recall_constrained_threshold``): no lower recall on known attacks
  than the incumbent's, less ``retrain_recall_tolerance``; then the fewest benign flagged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort

from l2loop.settings import Settings
from l2loop.workers.assembly.dataset import VARIATION_SOURCE
from l2loop.workers.retraining.dataset import NewData
from l2model.contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_BINARY,
    VOCABULARY_FILE,
    Manifest,
    ModelInput,
)
from l2model.corpus import CorpusSplit
from l2model.corpus.hard_negatives import hard_negatives
from l2model.counterparts import matched_counterparts
from l2model.evaluation import corpus_report, threat_scores
from l2model.fast import NAME as FAST_NAME
from l2model.fast import fast_form, parity_gap
from l2model.gate.counterfactual import (
    FlipBudget,
    ReportedText,
    TrafficEvent,
    explanations,
    within_budget,
)
from l2model.gate.verdict import flagged
from l2model.golden import refuse_golden
from l2model.lite import (
    BINARY_C,
    NAME,
    PARITY_TOLERANCE,
    max_parity_error,
    run_graph,
    session_for,
    train_lite,
)
from l2model.memory import TrafficGuard, learn_memory, read_memory
from l2model.ngrams import read_vocabulary, vocabulary_bytes
from l2model.private import private_dir, write_private
from l2model.record import TrainingRecord, text_key
from l2model.runtime import L2Model, feed_for
from l2model.training import manifest_bytes, recall_constrained_threshold

Mode = Literal["incremental", "full"]


def choose_mode(
    setting: Literal["auto", "incremental", "full"], new_train: int, full_from: int
) -> Mode:
    if setting != "auto":
        return setting
    return "full" if new_train >= full_from else "incremental"


def _weighted(record: TrainingRecord, hard_negative_weight: float) -> TrainingRecord:
    if not record.is_hard_negative or record.weight_multiplier >= hard_negative_weight:
        # A floor, not a value: a production-confirmed hard negative keeps its 5.0.
        return record
    return record.model_copy(update={"weight_multiplier": hard_negative_weight})


def training_set(
    base: CorpusSplit,
    new: CorpusSplit,
    remembered: Sequence[TrainingRecord],
    *,
    hard_negative_weight: float,
) -> list[TrainingRecord]:
    """The records a full retraining fits the heads on: the base training split, every
    hand-written hard negative (not only those of the base training split: the seeds call
    all of them "MUST INCLUDE"; the golden set's held-out variants measure how the boundary
    generalises), what the incumbent's memory held, and the new training split. Hard
    negatives weigh at least ``hard_negative_weight``."""
    in_base = {text_key(r.text) for r in base.train}
    written = [r for r in hard_negatives() if text_key(r.text) not in in_base]
    return [
        _weighted(r, hard_negative_weight) for r in (*base.train, *written, *remembered, *new.train)
    ]


def memory_examples(incumbent_dir: Path, new: CorpusSplit) -> list[TrainingRecord]:
    """What the candidate's memory holds: the hand-written hard negatives (expert-confirmed
    benign prompts that sound like attacks, which the gate demands unflagged), the
    incumbent's memory, then the dataset's confirmed examples (training and validation
    splits; the test split stays the gate's); each text once, the newest label winning. Not
    the synthetic variations: edited copies of one report are one example to a memory."""
    examples = {text_key(r.text): r for r in (*hard_negatives(), *read_memory(incumbent_dir))}
    for record in (*new.train, *new.validation):
        if record.source != VARIATION_SOURCE:
            examples[text_key(record.text)] = record
    return list(examples.values())


def _summary(records: Sequence[TrainingRecord]) -> dict[str, object]:
    return {
        "records": len(records),
        "benign": sum(r.label == 0 for r in records),
        "malicious": sum(r.label == 1 for r in records),
        "weight_sum": round(sum(r.weight_multiplier for r in records), 3),
    }


@dataclass(frozen=True)
class Job:
    """One candidate to train: on what, against which incumbent, into where."""

    settings: Settings
    base: CorpusSplit
    new: NewData
    current: L2Model
    version: str
    mode: Mode
    out_dir: Path
    trained_through: datetime
    # The counterfactual gate's budget: the memory learns no more than the gate accepts.
    budget: FlipBudget
    traffic: Sequence[TrafficEvent] = ()
    reported: Sequence[ReportedText] = ()

    def known(self) -> tuple[list[str], list[int]]:
        """Prompts whose labels are known and that a candidate must not make worse: the base
        validation split, every hand-written hard negative, and the confirmed attacks of the
        dataset and the incumbent's memory. Not the golden set: it judges, so nothing that
        learns may see it (docs/decisions/0010-golden-set.md)."""
        confirmed = (
            *read_memory(self.current.model_dir),
            *self.new.split.train,
            *self.new.split.validation,
        )
        records = {
            text_key(r.text): r
            for r in (
                *self.base.validation,
                *hard_negatives(),
                *(r for r in confirmed if r.label == 1),
            )
        }
        return [r.text for r in records.values()], [r.label for r in records.values()]

    @property
    def fast(self) -> bool:
        """Whether the candidate takes the fast form (its incumbent's), else lite's."""
        return self.current.manifest.kind == "fast"

    def manifest(
        self,
        model_bytes: bytes,
        threshold: float,
        vocabulary: np.ndarray | None,
        **fields: object,
    ) -> Manifest:
        """The candidate's manifest: what every candidate records, and ``fields``; written
        with the graph and, for the fast form, its ``vocabulary``."""
        form = (
            (FAST_NAME, "fast", self.current.manifest.input)
            if self.fast
            else (NAME, "lite", ModelInput(kind="text", name="text"))
        )
        manifest = Manifest.model_validate(
            {
                "name": form[0],
                "version": self.version,
                "kind": form[1],
                "input": form[2].model_dump(),
                "threshold": threshold,
                "created_at": datetime.now(tz=UTC),
                "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
                "trained_through": self.trained_through,
                **fields,
            }
        )
        # The graph holds fragments of the dataset's texts: owner-only, as the dataset is.
        private_dir(self.out_dir)
        write_private(self.out_dir / MODEL_FILE, model_bytes)
        if self.fast:
            if vocabulary is None:
                raise ValueError("a fast candidate needs its vocabulary")
            write_private(self.out_dir / VOCABULARY_FILE, vocabulary_bytes(vocabulary))
        write_private(self.out_dir / MANIFEST_FILE, manifest_bytes(manifest))
        return manifest

    def dataset_summary(self) -> dict[str, object]:
        return {
            "version": self.new.version,
            "path": str(self.new.path),
            **{name: _summary(part) for name, part in self.new.split.parts()},
        }


def train_memory(job: Job) -> Manifest:
    """Incremental mode: the incumbent's graph with the dataset's confirmed examples added to
    its memory; the threshold stays the incumbent's."""
    examples = memory_examples(job.current.model_dir, job.new.split)
    refuse_golden([r.text for r in examples], what="the memory of confirmed examples")
    known_texts, known_labels = job.known()
    explained = explanations(job.traffic, job.reported, job.budget.explain_similarity)

    def accepts(before: np.ndarray, after: np.ndarray) -> bool:
        return within_budget(job.traffic, before, after, explained, job.budget)

    # Scored as in production: the scorer reads the first max_chars characters.
    limit = job.current.manifest.input.max_chars
    current = job.current
    learned = learn_memory(
        onnx.load(current.model_dir / MODEL_FILE),
        feed_for(current.model_dir, current.manifest),
        current.threshold,
        [r.model_copy(update={"text": r.text[:limit]}) for r in examples],
        [text[:limit] for text in known_texts],
        known_labels,
        features_per_example=job.settings.memory_features_per_example,
        margin=job.settings.memory_margin,
        recall_tolerance=job.settings.retrain_recall_tolerance,
        guard=TrafficGuard([event.text[:limit] for event in job.traffic], accepts),
    )
    model_bytes = learned.model.SerializeToString()
    incumbent = current.manifest.model_extra or {}
    # The memory reads the incumbent's features: a fast candidate keeps its vocabulary.
    vocabulary = read_vocabulary(current.model_dir) if job.fast else None
    manifest = job.manifest(
        model_bytes,
        current.threshold,
        vocabulary,
        training_data={
            "mode": job.mode,
            "learner": "the incumbent's graph and a memory of confirmed examples",
            "incumbent": job.current.version,
            "dataset": job.dataset_summary(),
        },
        features=incumbent.get("features"),
        heads={**incumbent.get("heads", {}), "memory": learned.summary.model_dump(mode="json")},
        threshold_selection={"rule": "the incumbent's: the memory moves scores, not the cut"},
    )
    learned.write(job.out_dir)
    return manifest


def _serving_form(
    job: Job, graph: onnx.ModelProto, session: ort.InferenceSession, texts: Sequence[str]
) -> tuple[bytes, np.ndarray | None]:
    """The refitted lite graph in the incumbent's form: as it is, or its fast form (with its
    vocabulary), checked to score ``texts`` as the lite graph does."""
    if not job.fast:
        return graph.SerializeToString(), None
    form = fast_form(graph)
    gap = parity_gap(form, session, texts)
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"the fast graph departs from the lite graph by {gap:.2e}")
    return form.model.SerializeToString(), form.entries


def train_full(job: Job) -> Manifest:
    """Full mode: everything refitted on base + the incumbent's memory + new, and the
    counterparts of what is new or remembered; the threshold under the recall constraint on
    known attacks."""
    # The memory holds the hand-written hard negatives too; the base set has them already.
    written = {text_key(r.text) for r in hard_negatives()}
    remembered = [r for r in read_memory(job.current.model_dir) if text_key(r.text) not in written]
    records = training_set(
        job.base,
        job.new.split,
        remembered,
        hard_negative_weight=job.settings.retrain_hard_negative_weight,
    )
    counterparts, matched = matched_counterparts(
        [*remembered, *job.new.split.train],
        [*job.base.train, *hard_negatives()],
        job.settings.retrain_counterparts_per_example,
        job.settings.base_corpus_seed,
    )
    records += counterparts
    model = train_lite(records)
    graph = model.to_onnx()
    session = session_for(graph.SerializeToString(), threads=1)
    test = [r.text for r in job.new.split.test or job.base.test]
    gap = max_parity_error(model, session, test)
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX graph departs from scikit-learn by {gap:.2e}")
    model_bytes, vocabulary = _serving_form(job, graph, session, test)
    known_texts, known_labels = job.known()
    attacks = [text for text, label in zip(known_texts, known_labels, strict=True) if label]
    target = float(np.mean(flagged(job.current, attacks))) - job.settings.retrain_recall_tolerance
    validation = [*job.base.validation, *job.new.split.validation]
    benign = [
        *(r.text for r in validation if r.label == 0),
        *(r.text for r in records if r.is_hard_negative),
    ]

    def scores(texts: Sequence[str]) -> np.ndarray:
        return threat_scores(run_graph(session, texts)[OUTPUT_BINARY])

    threshold = recall_constrained_threshold(scores(attacks), target, scores(benign))
    outputs = run_graph(session, [r.text for r in validation])
    return job.manifest(
        model_bytes,
        threshold,
        vocabulary,
        training_data={
            "mode": job.mode,
            "base": {
                "generator": "l2model.corpus.generate_corpus",
                "size": job.settings.base_corpus_size,
                "seed": job.settings.base_corpus_seed,
                "train": _summary(job.base.train),
            },
            "dataset": job.dataset_summary(),
            "memory_folded_in": len(remembered),
            "counterparts": {
                "rule": "per new or remembered example, base or hand-written records of the "
                "opposite label in its script, length bucket and markup, together at its weight",
                **matched.model_dump(mode="json"),
            },
            "hard_negative_weight_floor": job.settings.retrain_hard_negative_weight,
            "hard_negatives": "every hand-written one, whichever base split holds it",
            "vocabulary": "base + memory + dataset",
        },
        heads={
            "binary": {"model": "LogisticRegression", "C": BINARY_C},
            "sample_weight": "weight_multiplier",
        },
        threshold_selection={
            **corpus_report(validation, outputs, threshold),
            "split": "base validation + dataset validation",
            "rule": "recall on known attacks no lower than the incumbent's "
            f"({target + job.settings.retrain_recall_tolerance:.2%} of {len(attacks)}) less "
            f"{job.settings.retrain_recall_tolerance:.2%}, then the fewest benign flagged",
        },
    )
