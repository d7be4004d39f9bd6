"""Closing the loop: train a candidate on base corpus + a new dataset, gate it against the
model in service, register it, promote it only on accept, and write a report of the run.

Modes (seeds: incremental training guide, step 4; docs/decisions/0013-retraining-loop.md and
0019-memory-of-confirmed-examples.md):

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

The gate judges the candidate against the current model on the dataset's test split (no
worse than the current model), the golden set (the production must-haves) and the hard
negatives (every one benign); and on a sample of every tenant's recent traffic read back from
``scan-events``, where the decisions that flip must be explained by the flipping tenant's own
reports or stay within a budget (``l2model.counterfactual``, decision 0021).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import orjson
from pydantic import BaseModel, ConfigDict

from l2loop.logs import get_logger
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.verdicts import connect
from l2loop.workers.assembler import VARIATION_SOURCE
from l2loop.workers.promotion import Promotion, promote_version
from l2loop.workers.traffic_sample import SampleStats, sample_recent_traffic
from l2model.contract import MANIFEST_FILE, MODEL_FILE, OUTPUT_BINARY, Manifest, ModelInput
from l2model.corpus import CorpusSplit, generate_corpus, read_jsonl, split_corpus
from l2model.corpus.hard_negatives import hard_negatives
from l2model.counterfactual import (
    CounterfactualReport,
    FlipBudget,
    FlipCounts,
    ReportedText,
    TrafficEvent,
    counterfactual_report,
    explanations,
    within_budget,
)
from l2model.counterparts import matched_counterparts
from l2model.evaluation import (
    ClassifierMetrics,
    LabeledPrompt,
    classifier_metrics,
    corpus_report,
    score_texts,
    threat_scores,
)
from l2model.gate import GateReport, Targets, gate, recorded_int8_loss
from l2model.golden import load_golden, refuse_golden
from l2model.lite import (
    BINARY_C,
    NAME,
    PARITY_TOLERANCE,
    max_parity_error,
    run_graph,
    session_for,
    train_lite,
)
from l2model.memory import TrafficGuard, learn_memory, read_memory, write_memory
from l2model.private import private_dir, write_private
from l2model.record import TrainingRecord, text_key
from l2model.registry import ModelPointer, ModelRegistry, semver_key
from l2model.runtime import L2Model
from l2model.training import manifest_bytes, recall_constrained_threshold

log = get_logger(__name__)

Mode = Literal["incremental", "full"]
# The assembler's split files (train / val / test) inside datasets/<version>/.
DATASET_SPLITS = ("train", "val", "test")
REPORT_FILE = "retrain-report.md"
EXAMPLE_CHARS = 100


@dataclass(frozen=True)
class NewData:
    """A retraining dataset: its version, directory, splits and manifest (as written)."""

    version: str
    path: Path
    split: CorpusSplit
    manifest: dict[str, object]

    @classmethod
    def read(cls, path: Path) -> NewData:
        train, validation, test = (read_jsonl(path / f"{name}.jsonl") for name in DATASET_SPLITS)
        manifest_path = path / "manifest.json"
        manifest = orjson.loads(manifest_path.read_bytes()) if manifest_path.exists() else {}
        return cls(path.name, path, CorpusSplit(train, validation, test), manifest)


@functools.cache
def base_corpus(size: int, seed: int) -> CorpusSplit:
    """The generated corpus the committed model was built from, split the same way."""
    return split_corpus(generate_corpus(size, seed), seed)


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


def next_version(registry: ModelRegistry, current: str) -> str:
    """A minor step past the newest version registered or in service: new data, same
    contract (seeds: semantic versioning)."""
    known = [current, *(meta.version for meta in registry.versions())]
    major, minor, _ = max(known, key=semver_key).split(".")
    return f"{major}.{int(minor) + 1}.0"


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

    def manifest(self, model_bytes: bytes, threshold: float, **fields: object) -> Manifest:
        """The candidate's manifest: what every candidate records, and ``fields``."""
        manifest = Manifest.model_validate(
            {
                "name": NAME,
                "version": self.version,
                "kind": "lite",
                "input": ModelInput(kind="text", name="text").model_dump(),
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
    budget = flip_budget(job.settings)
    explained = explanations(job.traffic, job.reported, budget.explain_similarity)

    def accepts(before: np.ndarray, after: np.ndarray) -> bool:
        return within_budget(job.traffic, before, after, explained, budget)

    # Scored as in production: the scorer reads the first max_chars characters.
    limit = job.current.manifest.input.max_chars
    learned = learn_memory(
        onnx.load(job.current.model_dir / MODEL_FILE),
        job.current.threshold,
        [r.model_copy(update={"text": r.text[:limit]}) for r in examples],
        [text[:limit] for text in known_texts],
        known_labels,
        features_per_example=job.settings.memory_features_per_example,
        margin=job.settings.memory_margin,
        recall_tolerance=job.settings.retrain_recall_tolerance,
        guard=TrafficGuard([event.text[:limit] for event in job.traffic], accepts),
    )
    model_bytes = learned.model.SerializeToString()
    incumbent = job.current.manifest.model_extra or {}
    manifest = job.manifest(
        model_bytes,
        job.current.threshold,
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
    write_memory(job.out_dir, learned.examples)
    return manifest


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
    model_bytes = model.to_onnx().SerializeToString()
    session = session_for(model_bytes, threads=1)
    test = job.new.split.test or job.base.test
    gap = max_parity_error(model, session, [r.text for r in test])
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX graph departs from scikit-learn by {gap:.2e}")
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


class GateSet(BaseModel):
    """One data set the gate judged on, with both models' metrics."""

    model_config = ConfigDict(frozen=True)

    name: str
    targets: Targets
    report: GateReport
    old_metrics: ClassifierMetrics
    by_sub_category: dict[str, tuple[int, int, int]]  # prompts, old flagged, new flagged


def _prompts(records: Sequence[TrainingRecord]) -> list[LabeledPrompt]:
    return [
        LabeledPrompt(
            text=r.text,
            label=r.label,
            family=r.family if r.label else None,
            sub_category=r.sub_category or None,
            notes=r.notes or None,
            source=r.source,
        )
        for r in records
    ]


def gate_inputs(
    new: CorpusSplit, golden_version: str
) -> list[tuple[str, Targets, list[LabeledPrompt]]]:
    golden = [
        LabeledPrompt.model_validate(probe.model_dump())
        for probe in load_golden(golden_version).probes
    ]
    # The hand-written list and the dataset's own, each text once.
    hard = list(
        {text_key(r.text): r for r in (*hard_negatives(), *new.test) if r.is_hard_negative}.values()
    )
    sets: list[tuple[str, Targets, list[LabeledPrompt]]] = []
    if new.test:
        sets.append(("dataset test split", "no_worse", _prompts(new.test)))
    sets.append((f"golden set {golden_version}", "production", golden))
    sets.append(("hard negatives", "production", _prompts(hard)))
    return sets


def judge(
    current: L2Model, candidate: L2Model, sets: Sequence[tuple[str, Targets, list[LabeledPrompt]]]
) -> list[GateSet]:
    judged = []
    for name, targets, prompts in sets:
        texts = [p.text for p in prompts]
        old, new = flagged(current, texts), flagged(candidate, texts)
        report = gate(
            prompts,
            old,
            new,
            old=f"{current.manifest.name} {current.version}",
            new=f"{candidate.manifest.name} {candidate.version}",
            int8_loss=recorded_int8_loss(candidate.manifest),
            targets=targets,
        )
        groups: dict[str, list[int]] = {}
        for prompt, was, now in zip(prompts, old, new, strict=True):
            counts = groups.setdefault(prompt.sub_category or "-", [0, 0, 0])
            counts[0] += 1
            counts[1] += int(was)
            counts[2] += int(now)
        judged.append(
            GateSet(
                name=name,
                targets=targets,
                report=report,
                old_metrics=classifier_metrics(prompts, old),
                by_sub_category={key: (a, b, c) for key, (a, b, c) in sorted(groups.items())},
            )
        )
    return judged


class RetrainOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset: str
    dataset_path: str
    mode: Mode
    current_version: str
    candidate_version: str
    candidate_threshold: float
    trained_through: datetime
    gate: list[GateSet]
    accepted: bool
    promoted: bool
    suppressions_expired: int
    report: str
    counterfactual: CounterfactualReport | None = None
    traffic: SampleStats | None = None


async def _current_model_dir(settings: Settings) -> Path:
    """The model the scorers run: the registry pointer's, else the configured directory."""
    client = connect(settings.redis_dsn)
    try:
        current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
    finally:
        await client.aclose()
    return Path(current.path) if current else settings.model_dir


async def _promote(settings: Settings, registry: ModelRegistry, version: str) -> Promotion:
    client = connect(settings.redis_dsn)
    try:
        return await promote_version(
            client, registry, version, key_prefix=settings.topic_prefix, backoff=settings.backoff
        )
    finally:
        await client.aclose()


@dataclass(frozen=True)
class Candidate:
    version: str
    path: Path
    mode: Mode
    model: L2Model
    gate: list[GateSet]
    counterfactual: CounterfactualReport | None = None

    @property
    def accepted(self) -> bool:
        replayed = self.counterfactual is None or self.counterfactual.accepted
        return replayed and all(item.report.accepted for item in self.gate)

    def failed_rules(self) -> list[str]:
        """Every gate rule the candidate failed, with the set it failed on."""
        judged = [(item.name, item.report.rules) for item in self.gate]
        if self.counterfactual is not None:
            judged.append(("recent traffic", self.counterfactual.rules))
        return [
            f"{name}: {rule.rule} ({rule.detail})"
            for name, rules in judged
            for rule in rules
            if rule.status == "fail"
        ]


def train_and_judge(
    settings: Settings,
    new: NewData,
    current: L2Model,
    version: str,
    out_dir: Path,
    trained_through: datetime,
    traffic: Sequence[TrafficEvent] = (),
    reported: Sequence[ReportedText] = (),
) -> Candidate:
    """Trains the candidate into ``out_dir`` and gates it against ``current``, on labelled
    data and on the ``traffic`` sample (flips explained by ``reported``); registers and
    promotes nothing (``retrain`` does, the offline loop simulation does not)."""
    base = base_corpus(settings.base_corpus_size, settings.base_corpus_seed)
    mode = choose_mode(settings.retrain_mode, len(new.split.train), settings.retrain_full_from)
    log.info("retrain_started", dataset=new.version, mode=mode, candidate=version)
    job = Job(
        settings, base, new, current, version, mode, out_dir, trained_through, traffic, reported
    )
    train_memory(job) if mode == "incremental" else train_full(job)
    candidate = L2Model.load(out_dir)
    judged = judge(current, candidate, gate_inputs(new.split, settings.golden_version))
    replayed = replay_traffic(settings, current, candidate, traffic, reported)
    return Candidate(version, out_dir, mode, candidate, judged, replayed)


def flip_budget(settings: Settings) -> FlipBudget:
    return FlipBudget(
        explain_similarity=settings.gate_flip_explain_similarity,
        share=settings.gate_flip_budget,
        minimum=settings.gate_flip_budget_min,
    )


def replay_traffic(
    settings: Settings,
    current: L2Model,
    candidate: L2Model,
    traffic: Sequence[TrafficEvent],
    reported: Sequence[ReportedText],
) -> CounterfactualReport:
    """The counterfactual gate: both models decide on the sampled traffic; each decision
    that flips is explained by a report of its own tenant or counts against the budget."""
    texts = [event.text for event in traffic]
    report = counterfactual_report(
        traffic,
        flagged(current, texts),
        flagged(candidate, texts),
        reported,
        flip_budget(settings),
        old=f"{current.manifest.name} {current.version}",
        new=f"{candidate.manifest.name} {candidate.version}",
    )
    log.info(
        "counterfactual_replay",
        events=report.events,
        tenants=report.tenants,
        flips=report.to_allowed + report.to_flagged,
        unexplained=report.unexplained,
        accepted=report.accepted,
    )
    return report


def reported_texts(settings: Settings, new: NewData) -> list[ReportedText]:
    """The texts the tenants reported over the dataset's period, each tenant's own: the
    dataset's records carry no tenant (the training format has no field for it), the curated
    store's revisions do, one per reporting tenant. Nothing when the manifest names no
    period (a dataset not made by the assembler)."""
    period = new.manifest.get("period")
    if not (isinstance(period, dict) and {"start", "end"} <= period.keys()):
        log.warning("retrain_reports_unknown", dataset=new.version, why="no period in manifest")
        return []
    start, end = date.fromisoformat(period["start"]), date.fromisoformat(period["end"])
    found: dict[tuple[str, str, str], ReportedText] = {}
    for example in CuratedStore(settings.data_dir).read(start, end):
        if example.report_kind == "confirmed_threat":
            continue
        found.setdefault(
            (example.tenant_id, example.report_kind, example.example_id),
            ReportedText(tenant_id=example.tenant_id, text=example.text, kind=example.report_kind),
        )
    return list(found.values())


def retrain(settings: Settings, dataset_dir: Path, trained_through: datetime) -> RetrainOutcome:
    """Trains, gates and registers a candidate on the dataset in ``dataset_dir``; promotes it
    when the gate accepts, and writes the run's report beside the dataset. Synchronous: the
    scheduler runs it in a worker thread."""
    new = NewData.read(dataset_dir)
    current = L2Model.load(asyncio.run(_current_model_dir(settings)))
    registry = ModelRegistry(settings.registry_root)
    version = next_version(registry, current.version)
    traffic = asyncio.run(sample_recent_traffic(settings))
    candidate = train_and_judge(
        settings,
        new,
        current,
        version,
        settings.data_dir / "models" / "candidates" / version,
        trained_through,
        traffic=traffic.events,
        reported=reported_texts(settings, new),
    )
    registry.add(
        candidate.path,
        changes=[
            f"{candidate.mode} retraining on dataset {new.version} "
            f"({len(new.split.train)} new training examples)",
            f"gate: {'accepted' if candidate.accepted else 'rejected'} against {current.version}",
        ],
        trained_through=trained_through,
    )
    promotion = asyncio.run(_promote(settings, registry, version)) if candidate.accepted else None
    report_path = new.path / REPORT_FILE
    outcome = RetrainOutcome(
        dataset=new.version,
        dataset_path=str(new.path),
        mode=candidate.mode,
        current_version=current.version,
        candidate_version=version,
        candidate_threshold=candidate.model.threshold,
        trained_through=trained_through,
        gate=candidate.gate,
        accepted=candidate.accepted,
        promoted=promotion is not None,
        suppressions_expired=0 if promotion is None else len(promotion.expired),
        report=str(report_path),
        counterfactual=candidate.counterfactual,
        traffic=traffic.stats,
    )
    write_private(report_path, render_report(outcome, new))
    log.info(
        "retrain_finished",
        candidate=version,
        accepted=outcome.accepted,
        promoted=outcome.promoted,
        report=str(report_path),
    )
    return outcome


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _counts(records: Sequence[TrainingRecord], key: str) -> str:
    found = Counter(str(getattr(r, key)) or "-" for r in records)
    return ", ".join(f"{name} {count}" for name, count in sorted(found.items())) or "none"


def _held_back(manifest: dict[str, object]) -> list[str]:
    """The manifest's entries about records not trained on (rejected, conflicts, held back),
    whatever shape the assembler gives them."""
    return [
        f"- `{key}`: {orjson.dumps(value).decode()[:600]}"
        for key, value in manifest.items()
        if any(word in key for word in ("reject", "conflict", "held", "invalid", "duplicate"))
    ]


def render_report(outcome: RetrainOutcome, new: NewData) -> str:
    decision = (
        "ACCEPTED and promoted"
        if outcome.promoted
        else ("ACCEPTED" if outcome.accepted else "REJECTED (not promoted)")
    )
    lines = [
        f"# Retraining run: dataset {outcome.dataset}",
        "",
        f"- candidate **{outcome.candidate_version}** ({outcome.mode} mode, threshold "
        f"{outcome.candidate_threshold:g}) against current **{outcome.current_version}**",
        f"- trained through {outcome.trained_through.isoformat()}",
        f"- gate decision: **{decision}**; suppressions expired: {outcome.suppressions_expired}",
        "",
        "## What came in",
        "",
    ]
    for name, part in new.split.parts():
        lines.append(
            f"- {name}: {len(part)} records (labels: {_counts(part, 'label')}; families: "
            f"{_counts(part, 'family')})"
        )
    lines.append(f"- reported categories (train): {_counts(new.split.train, 'sub_category')}")
    lines.append(f"- sources (train): {_counts(new.split.train, 'source')}")
    lines += ["", "## Held back", ""]
    lines += _held_back(new.manifest) or ["- the dataset manifest lists nothing held back"]
    for item in outcome.gate:
        old, now = item.old_metrics, item.report.new_metrics
        lines += [
            "",
            f"## {item.name} ({item.report.prompts} prompts; targets: {item.targets})",
            "",
            "| metric | before | after |",
            "|---|---:|---:|",
            f"| FP rate | {_pct(old.fp_rate)} | {_pct(now.fp_rate)} |",
            f"| recall | {_pct(old.recall)} | {_pct(now.recall)} |",
            f"| precision | {_pct(old.precision)} | {_pct(now.precision)} |",
            f"| hard negatives flagged | {old.hard_negatives_flagged} | "
            f"{now.hard_negatives_flagged} |",
        ]
        for family, group in (now.recall_by_family or {}).items():
            before = (old.recall_by_family or {}).get(family)
            lines.append(
                f"| recall {family} | {_pct(None if before is None else before.rate)} | "
                f"{_pct(group.rate)} |"
            )
        lines += [
            "",
            "| reported category | prompts | flagged before | flagged after |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {total} | {was} | {now_} |"
            for name, (total, was, now_) in item.by_sub_category.items()
        ]
        report = item.report
        lines += [
            "",
            f"Regressions {report.regressions} ({_pct(report.regression_rate)}), improvements "
            f"{report.improvements} ({_pct(report.improvement_rate)}).",
            "",
        ]
        lines += [f"- {rule.status.upper()}: {rule.rule} — {rule.detail}" for rule in report.rules]
        for title, changes in (
            ("Example regressions", report.regression_examples),
            ("Example improvements", report.improvement_examples),
        ):
            if changes:
                lines += ["", f"{title}:", ""]
                lines += [
                    f"- {'malicious' if c.label else 'benign'}, "
                    f"{'flagged' if c.old_flagged else 'passed'} → "
                    f"{'flagged' if c.new_flagged else 'passed'}: `{c.text[:EXAMPLE_CHARS]!r}`"
                    for c in changes
                ]
    lines += counterfactual_section(outcome.counterfactual, outcome.traffic)
    return "\n".join(lines) + "\n"


_FLIP_COLUMNS = (
    "events | flagged before | flagged after | flagged → allowed (unexplained) | "
    "allowed → flagged (unexplained)"
)


def _flip_cells(row: FlipCounts) -> str:
    return (
        f"{row.events} | {row.flagged_before} | {row.flagged_after} | "
        f"{row.to_allowed} ({row.unexplained_to_allowed}) | "
        f"{row.to_flagged} ({row.unexplained_to_flagged})"
    )


def _flip_table(title: str, rows: Sequence[FlipCounts]) -> list[str]:
    return [
        "",
        f"| {title} | {_FLIP_COLUMNS} |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {row.key} | {_flip_cells(row)} |" for row in rows),
    ]


def counterfactual_section(
    report: CounterfactualReport | None, traffic: SampleStats | None
) -> list[str]:
    """The report's account of the counterfactual replay: what was sampled, the flips per
    tenant, language and category, the rules and example flips."""
    lines = ["", "## Counterfactual replay of recent traffic", ""]
    if traffic is not None:
        left_out = (
            f"{traffic.too_old} older, {traffic.malformed} malformed, {traffic.canary} canary, "
            f"{traffic.golden} golden left out"
        )
        since = traffic.since.isoformat(timespec="seconds")
        lines.append(
            f"- sample: {traffic.sampled} events of {traffic.tenants} tenants from "
            f"`{traffic.topic}` since {since} ({traffic.read} records read; {left_out})"
            f"{'' if traffic.complete else '; the read timed out before the end'}"
        )
    if report is None:
        return [*lines, "- not run"]
    budget = report.budget
    lines += [
        f"- decisions ({report.old} → {report.new}): {report.flagged_before} flagged before, "
        f"{report.flagged_after} after; {report.to_allowed} flagged → allowed "
        f"({report.unexplained_to_allowed} unexplained), {report.to_flagged} allowed → "
        f"flagged ({report.unexplained_to_flagged} unexplained)",
        "- a flip is explained on a tenant that reported its direction (false positives for "
        "flagged → allowed, misses for allowed → flagged); an un-flag elsewhere when its "
        "nearest report is a false positive at char n-gram TF-IDF similarity >= "
        f"{budget.explain_similarity:g}; a new flag elsewhere never; the budget of "
        f"unexplained flips is max({budget.minimum}, {budget.share:.2%} of the events, rounded "
        f"up), per tenant and overall ({report.allowance} overall)",
        "",
        f"| tenant | {_FLIP_COLUMNS} | reported FP / missed | budget of unexplained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.key} | {_flip_cells(row)} | {row.reported_false_positives} / "
        f"{row.reported_false_negatives} | {row.allowance}"
        f"{'' if row.within_budget else ' **over**'} |"
        for row in report.by_tenant
    ]
    lines += _flip_table("language (metadata, else script)", report.by_language)
    if report.by_category:
        lines += _flip_table("category (metadata category or source)", report.by_category)
    else:
        lines += ["", "- no sampled event named its category or source"]
    lines += [""]
    lines += [f"- {rule.status.upper()}: {rule.rule} — {rule.detail}" for rule in report.rules]
    if report.examples:
        lines += ["", "Example flips:", ""]
        for example in report.examples:
            why = "explained" if example.explained else "unexplained"
            if example.nearest_report is not None:
                why += f"; nearest report {example.similarity:.2f}: `{example.nearest_report!r}`"
            direction = example.direction.replace("_to_", " → ")
            lines.append(
                f"- {example.tenant_id}, {direction}, {example.language} ({why}): "
                f"`{example.text!r}`"
            )
    return lines


def flagged(model: L2Model, texts: Sequence[str]) -> np.ndarray:
    return score_texts(model, texts) >= model.threshold
