"""The gate's verdict on a candidate: may it replace the model in service?

Both models decide on the same data, and the candidate is judged on (docs/decisions/
0013-retraining-loop.md, 0021-counterfactual-gate.md):

- the dataset's test split: no worse than the model in service (``labelled``, ``no_worse``);
- the golden set and the hard negatives: the production must-haves (``production``);
- a sample of every tenant's recent traffic: the decisions that flip are explained by the
  flipping tenant's own reports or stay within a budget (``counterfactual``).

The candidate is accepted when every rule of every set and of the replay holds. Pure: the
caller gathers the traffic sample and the reported texts, and registers or promotes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from l2model.corpus.hard_negatives import hard_negatives
from l2model.evaluation import ClassifierMetrics, LabeledPrompt, classifier_metrics, score_texts
from l2model.gate.counterfactual import (
    CounterfactualReport,
    FlipBudget,
    ReportedText,
    TrafficEvent,
    counterfactual_report,
)
from l2model.gate.labelled import GateReport, Targets, gate, recorded_int8_loss
from l2model.golden import load_golden
from l2model.record import TrainingRecord, text_key
from l2model.runtime import L2Model

# A labelled set the gate judges on: its name, the targets that bind on it, its prompts.
LabelledSet = tuple[str, Targets, list[LabeledPrompt]]


class GateSet(BaseModel):
    """One data set the gate judged on, with both models' metrics."""

    model_config = ConfigDict(frozen=True)

    name: str
    targets: Targets
    report: GateReport
    old_metrics: ClassifierMetrics
    by_sub_category: dict[str, tuple[int, int, int]]  # prompts, old flagged, new flagged


@dataclass(frozen=True)
class GateVerdict:
    """What the gate found on every labelled set and on the recent traffic."""

    sets: list[GateSet]
    counterfactual: CounterfactualReport

    @property
    def accepted(self) -> bool:
        return self.counterfactual.accepted and all(item.report.accepted for item in self.sets)

    def failed_rules(self) -> list[str]:
        """Every gate rule the candidate failed, with the set it failed on."""
        judged = [(item.name, item.report.rules) for item in self.sets]
        judged.append(("recent traffic", self.counterfactual.rules))
        return [
            f"{name}: {rule.rule} ({rule.detail})"
            for name, rules in judged
            for rule in rules
            if rule.status == "fail"
        ]


def judge_candidate(
    current: L2Model,
    candidate: L2Model,
    *,
    test: Sequence[TrainingRecord],
    golden_version: str,
    traffic: Sequence[TrafficEvent],
    reported: Sequence[ReportedText],
    budget: FlipBudget,
) -> GateVerdict:
    """Judges ``candidate`` against ``current`` on the dataset's ``test`` split, the golden
    set and the hard negatives, and on the ``traffic`` sample (flips explained by
    ``reported``, the rest held to ``budget``)."""
    judged = judge_labelled(current, candidate, labelled_sets(test, golden_version))
    replayed = replay_traffic(current, candidate, traffic, reported, budget)
    return GateVerdict(judged, replayed)


def flagged(model: L2Model, texts: Sequence[str]) -> np.ndarray:
    """The model's decisions on ``texts``, as the scorer makes them."""
    return score_texts(model, texts) >= model.threshold


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


def labelled_sets(test: Sequence[TrainingRecord], golden_version: str) -> list[LabelledSet]:
    golden = [
        LabeledPrompt.model_validate(probe.model_dump())
        for probe in load_golden(golden_version).probes
    ]
    # The hand-written list and the dataset's own, each text once.
    hard = list(
        {text_key(r.text): r for r in (*hard_negatives(), *test) if r.is_hard_negative}.values()
    )
    sets: list[LabelledSet] = []
    if test:
        sets.append(("dataset test split", "no_worse", _prompts(test)))
    sets.append((f"golden set {golden_version}", "production", golden))
    sets.append(("hard negatives", "production", _prompts(hard)))
    return sets


def judge_labelled(
    current: L2Model, candidate: L2Model, sets: Sequence[LabelledSet]
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


def replay_traffic(
    current: L2Model,
    candidate: L2Model,
    traffic: Sequence[TrafficEvent],
    reported: Sequence[ReportedText],
    budget: FlipBudget,
) -> CounterfactualReport:
    """The counterfactual gate: both models decide on the sampled traffic; each decision
    that flips is explained by a report of its own tenant or counts against the budget."""
    texts = [event.text for event in traffic]
    return counterfactual_report(
        traffic,
        flagged(current, texts),
        flagged(candidate, texts),
        reported,
        budget,
        old=f"{current.manifest.name} {current.version}",
        new=f"{candidate.manifest.name} {candidate.version}",
    )
