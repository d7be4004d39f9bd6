"""Closing the loop: train a candidate on base corpus + a new dataset, gate it against the
model in service, register it, release it only on accept, and write a report of the run.

This module gathers what the run needs and records what it did: the dataset
(``retraining.dataset``), the model in service (the registry pointer), a sample of every
tenant's recent traffic (``traffic_sample``) and the texts the tenants reported (the curated
store). The candidate is trained in ``retraining.training`` (incremental or full mode) and
judged by the regression gate, ``l2model.gate.verdict.judge_candidate``: on the dataset's
test split (no worse than the current model), the golden set (the production must-haves)
and the hard negatives (every one benign); and on the traffic sample, where the decisions
that flip must be explained by the flipping tenant's own reports or stay within a budget
(``l2model.gate.counterfactual``, decision 0021). An accepted candidate is released by
``retraining.release``: a staged rollout starts (``L2LOOP_PROMOTION=rollout``, the default),
or it is promoted at once (``immediate``); the run's report is ``retraining.report``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from l2loop.logs import get_logger
from l2loop.settings import Settings
from l2loop.stores.shared import curated_store, model_registry
from l2loop.stores.verdicts import connected
from l2loop.workers.retraining.dataset import NewData, base_corpus
from l2loop.workers.retraining.release import release
from l2loop.workers.retraining.report import REPORT_FILE, RetrainOutcome, render_report
from l2loop.workers.retraining.training import Job, Mode, choose_mode, train_full, train_memory
from l2loop.workers.traffic_sample import sample_recent_traffic
from l2model.gate.counterfactual import FlipBudget, ReportedText, TrafficEvent
from l2model.gate.verdict import GateVerdict, judge_candidate
from l2model.private import write_private
from l2model.registry import ModelPointer, ModelRegistry, semver_key
from l2model.runtime import L2Model

log = get_logger(__name__)


def next_version(registry: ModelRegistry, current: str) -> str:
    """A minor step past the newest version registered or in service: new data, same
    contract (seeds: semantic versioning)."""
    known = [current, *(meta.version for meta in registry.versions())]
    major, minor, _ = max(known, key=semver_key).split(".")
    return f"{major}.{int(minor) + 1}.0"


def flip_budget(settings: Settings) -> FlipBudget:
    return FlipBudget(
        explain_similarity=settings.gate_flip_explain_similarity,
        share=settings.gate_flip_budget,
        minimum=settings.gate_flip_budget_min,
    )


async def _current_model_dir(settings: Settings) -> Path:
    """The model the scorers run: the registry pointer's, else the configured directory."""
    async with connected(settings.redis_dsn) as client:
        current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
    if current is None:
        return settings.model_dir
    # Fetched into this machine's cache where the registry is a bucket: blocking.
    return await asyncio.to_thread(model_registry(settings).local_dir, current.path)


@dataclass(frozen=True)
class Candidate:
    """A trained candidate and the gate's verdict on it."""

    version: str
    path: Path
    mode: Mode
    model: L2Model
    verdict: GateVerdict

    @property
    def accepted(self) -> bool:
        return self.verdict.accepted

    def failed_rules(self) -> list[str]:
        return self.verdict.failed_rules()


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
    releases nothing (``retrain`` does, the offline loop simulation does not)."""
    base = base_corpus(settings.base_corpus_size, settings.base_corpus_seed)
    mode = choose_mode(settings.retrain_mode, len(new.split.train), settings.retrain_full_from)
    log.info("retrain_started", dataset=new.version, mode=mode, candidate=version)
    budget = flip_budget(settings)
    job = Job(
        settings,
        base,
        new,
        current,
        version,
        mode,
        out_dir,
        trained_through,
        budget,
        traffic,
        reported,
    )
    train_memory(job) if mode == "incremental" else train_full(job)
    candidate = L2Model.load(out_dir)
    verdict = judge_candidate(
        current,
        candidate,
        test=new.split.test,
        golden_version=settings.golden_version,
        traffic=traffic,
        reported=reported,
        budget=budget,
    )
    replayed = verdict.counterfactual
    log.info(
        "counterfactual_replay",
        events=replayed.events,
        tenants=replayed.tenants,
        flips=replayed.to_allowed + replayed.to_flagged,
        unexplained=replayed.unexplained,
        accepted=replayed.accepted,
    )
    return Candidate(version, out_dir, mode, candidate, verdict)


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
    for example in curated_store(settings).read(start, end):
        if example.report_kind == "confirmed_threat":
            continue
        found.setdefault(
            (example.tenant_id, example.report_kind, example.example_id),
            ReportedText(tenant_id=example.tenant_id, text=example.text, kind=example.report_kind),
        )
    return list(found.values())


def retrain(settings: Settings, dataset_dir: Path, trained_through: datetime) -> RetrainOutcome:
    """Trains, gates and registers a candidate on the dataset in ``dataset_dir``; releases it
    when the gate accepts (``retraining.release``), and writes the run's report beside the
    dataset. Synchronous: the scheduler runs it in a worker thread."""
    new = NewData.read(dataset_dir)
    current = L2Model.load(asyncio.run(_current_model_dir(settings)))
    registry = model_registry(settings)
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
    released = asyncio.run(release(settings, registry, version)) if candidate.accepted else None
    report_path = new.path / REPORT_FILE
    outcome = RetrainOutcome(
        dataset=new.version,
        dataset_path=str(new.path),
        mode=candidate.mode,
        current_version=current.version,
        candidate_version=version,
        candidate_threshold=candidate.model.threshold,
        trained_through=trained_through,
        gate=candidate.verdict.sets,
        accepted=candidate.accepted,
        release=released,
        report=str(report_path),
        counterfactual=candidate.verdict.counterfactual,
        traffic=traffic.stats,
    )
    write_private(report_path, render_report(outcome, new))
    log.info(
        "retrain_finished",
        candidate=version,
        accepted=outcome.accepted,
        release=None if released is None else released.summary(),
        report=str(report_path),
    )
    return outcome
