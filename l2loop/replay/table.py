"""``replay.md``: what each cycle did, and the models measured on the held-out half and
the golden set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l2loop.demo.figures import (
    Figures,
    golden_report,
    half_report,
    non_english_benign,
    render_figures,
)
from l2loop.replay.record import CycleOutcome, ReplayRecord
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2loop.workers.retraining.dataset import base_corpus
from l2model.evaluation import LabeledPrompt
from l2model.runtime import L2Model


def cycle_lines(cycle: CycleOutcome) -> list[str]:
    """What a cycle did: errors, reports and where the ledger says they ended, the review,
    the hostile reports' fate, the decision."""
    r, c, v = cycle.reports, cycle.record, cycle.review
    rejected = ", ".join(f"{k} {n}" for k, n in r.rejected.items()) or "none"
    retried = f"; {r.quota_retries} quota refusals posted again" if r.quota_retries else ""
    hostile = f" + {r.hostile_reported} hostile" if r.hostile_reported else ""
    lines = [
        f"- cycle {cycle.cycle}: {r.events} events scored by {r.model_version}: "
        f"{r.false_positives} false positives, {r.misses} misses; reported "
        f"{r.fp_reported} FPs + {r.fn_reported} misses{hostile} = {r.reported}: curated "
        f"{r.curated}, quarantined {r.quarantined}, rejected {r.rejected_finally} "
        f"({rejected}{retried})",
    ]
    if v is not None:
        lines.append(
            f"  - review: {v.reviewed} of {v.pending} quarantined reports in "
            f"{v.groups_reviewed} of {v.groups} groups ({v.groups_split} mixed, decided "
            f"member by member): released {v.released}, discarded {v.discarded}"
        )
    if cycle.hostile:
        where = ", ".join(f"{k} {n}" for k, n in cycle.hostile.items())
        lines.append(f"  - hostile reports after review: {where}")
    lines.append(
        f"  - {c.decision()}; serving {cycle.serving_after}"
        + (f"; report {c.report}" if c.report else "")
    )
    return lines


def table_columns(record: ReplayRecord) -> list[tuple[str, str]]:
    """The models the table measures, as (heading, version): the one in service at the
    start, the one in service after each cycle, and each rejected candidate (what the gate
    kept out of service)."""
    columns = [("before", record.start_model)]
    for cycle in record.cycles:
        columns.append((f"after cycle {cycle.cycle}", cycle.serving_after))
        candidate = cycle.record.candidate_version
        if candidate is not None and not cycle.record.promoted:
            columns.append((f"cycle {cycle.cycle} candidate, rejected", candidate))
    return columns


def measure(
    record: ReplayRecord,
    held_out: Sequence[LabeledPrompt],
    start: L2Model,
    settings: Settings,
) -> list[Figures]:
    """Every column of the table, each version scored once."""
    registry = model_registry(settings)
    non_english = non_english_benign(
        settings.golden_version, base_corpus(settings.base_corpus_size, settings.base_corpus_seed)
    )
    measured: dict[str, tuple[dict[str, object], dict[str, float | int]]] = {}
    columns = []
    for heading, version in table_columns(record):
        if version not in measured:
            model = start if version == start.version else L2Model.load(registry.path(version))
            measured[version] = (
                half_report(held_out, model),
                golden_report(model, settings.golden_version, non_english),
            )
        columns.append(Figures(f"{heading} ({version})", *measured[version]))
    return columns


def review_line(record: ReplayRecord) -> str:
    if not record.review_share:
        return (
            "- FP reports scored at or above the high-confidence bar wait in quarantine; "
            "nobody reviews them in this replay"
        )
    return (
        "- each cycle a reviewer who knows every prompt's label works through the quarantine "
        f"in review groups, largest first: at most {record.review_budget} groups and "
        f"{record.review_share} of the held reports; true claims are released, the others "
        "discarded"
    )


def render_replay(record: ReplayRecord, data: Path, columns: Sequence[Figures]) -> str:
    lines = [
        f"# Loop replay on {data.name} (report share {record.share}, seed {record.seed}"
        + (f", sample {record.sample}" if record.sample is not None else "")
        + (f", review share {record.review_share}" if record.review_share else "")
        + (f", hostile share {record.hostile_share}" if record.hostile_share else "")
        + ")",
        "",
        f"- replayed half {record.replayed} prompts"
        + (
            f" ({record.not_replayable} not sendable as scan events)"
            if record.not_replayable
            else ""
        )
        + f", held-out half {record.held_out}; model at start {record.start_model}",
        f"- state: {record.state_dir} (topic and key prefix `{record.topic_prefix}`)",
        review_line(record),
    ]
    if record.hostile_share:
        lines.append(
            f"- a hostile user reports {record.hostile_share} of the attacks flagged at or "
            "above the high-confidence bar as false positives: each must end discarded in "
            "review or rejected, never curated"
        )
    for cycle in record.cycles:
        lines += cycle_lines(cycle)
    return "\n".join([*lines, "", *render_figures(columns)]) + "\n"
