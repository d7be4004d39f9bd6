"""What a retraining run did (``RetrainOutcome``) and ``retrain-report.md``, the account of it
written beside the dataset: what came in, what was held back, every gate set's metrics and
rules, and the counterfactual replay's flips per tenant, language and category."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict

from l2loop.workers.retraining.dataset import NewData
from l2loop.workers.retraining.release import Release
from l2loop.workers.retraining.training import Mode
from l2loop.workers.traffic_sample import SampleStats
from l2model.evaluation import percent
from l2model.gate.counterfactual import CounterfactualReport, FlipCounts
from l2model.gate.verdict import GateSet
from l2model.record import TrainingRecord

REPORT_FILE = "retrain-report.md"
EXAMPLE_CHARS = 100


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
    # What became of the candidate the gate accepted; None when it rejected it.
    release: Release | None
    report: str
    counterfactual: CounterfactualReport | None = None
    traffic: SampleStats | None = None

    @property
    def promoted(self) -> bool:
        """Whether the candidate was made the model in service by this run (``immediate``);
        a rollout's candidate is promoted later, by the workers, if it reaches 100."""
        return self.release is not None and self.release.how == "promoted"


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


def _decision(outcome: RetrainOutcome) -> str:
    """The gate's decision and what became of the candidate, and the suppressions it ended."""
    released = outcome.release
    if released is None:
        return "gate decision: **REJECTED (not released)**"
    decision = f"gate decision: **ACCEPTED, {released.summary()}**"
    if released.how == "promoted":
        return f"{decision}; suppressions expired: {released.suppressions_expired}"
    if released.how == "rollout":
        return f"{decision}; suppressions it learnt expire if it reaches 100"
    return (
        f"{decision}; it stays registered: `l2loop rollout start {outcome.candidate_version}` "
        "once that rollout has ended"
    )


def render_report(outcome: RetrainOutcome, new: NewData) -> str:
    lines = [
        f"# Retraining run: dataset {outcome.dataset}",
        "",
        f"- candidate **{outcome.candidate_version}** ({outcome.mode} mode, threshold "
        f"{outcome.candidate_threshold:g}) against current **{outcome.current_version}**",
        f"- trained through {outcome.trained_through.isoformat()}",
        f"- {_decision(outcome)}",
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
            f"| FP rate | {percent(old.fp_rate)} | {percent(now.fp_rate)} |",
            f"| recall | {percent(old.recall)} | {percent(now.recall)} |",
            f"| precision | {percent(old.precision)} | {percent(now.precision)} |",
            f"| hard negatives flagged | {old.hard_negatives_flagged} | "
            f"{now.hard_negatives_flagged} |",
        ]
        for family, group in (now.recall_by_family or {}).items():
            before = (old.recall_by_family or {}).get(family)
            lines.append(
                f"| recall {family} | {percent(None if before is None else before.rate)} | "
                f"{percent(group.rate)} |"
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
            f"Regressions {report.regressions} ({percent(report.regression_rate)}), improvements "
            f"{report.improvements} ({percent(report.improvement_rate)}).",
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
