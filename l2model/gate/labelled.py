"""The labelled gate: how a candidate decides on labelled prompts, against the model in
service and the production must-haves.

Two sets of rules, both over the same labeled prompts:

- regressions against the old model (seeds: incremental training guide, step 5): a prompt the
  old model got right and the new one gets wrong is a regression, the reverse an improvement;
  reject above 5 % regressions, or above 2 % when improvements do not at least match them;
- the production must-haves on the new model alone (seeds: retraining handoff): FP rate
  < 1 %, recall > 95 %, no hard negative flagged, programming-question FP rate < 0.5 %, and an
  INT8 model within 1 % of its fp32 accuracy when its manifest records that loss.

The must-haves bind on the golden set. On other data (a retraining dataset's test split of
real reported prompts) ``targets="no_worse"`` asks instead that the new model's FP rate,
recall and programming-question FP rate be no worse than the old model's, within
``GateLimits.no_worse_tolerance``: a model that halves real FPs is promoted even while it is
still above 1 % (docs/architecture.md, "Rules of the loop"). A rate counts as worse only when
it moved past the tolerance *and* the move is significant by a one-sided exact McNemar test over the
prompts on which the two models disagree (``GateLimits.no_worse_significance``): on a test
split of 18 attacks one missed prompt is 5.6 points, which is chance, not a worse model
(decision 0014). Hard negatives and INT8 loss bind always.

``gate`` is a pure function of the verdicts, so it is tested without any model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from l2model.contract import Manifest
from l2model.evaluation import ClassifierMetrics, LabeledPrompt, classifier_metrics, percent
from l2model.gate.rules import RuleResult

EXAMPLES = 10
EXAMPLE_CHARS = 100


class GateLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_regression_rate: float = 0.05
    # Above this, regressions must be matched by at least as many improvements.
    caution_regression_rate: float = 0.02
    max_fp_rate: float = 0.01
    min_recall: float = 0.95
    max_programming_fp_rate: float = 0.005
    max_int8_loss: float = 0.01
    # ``targets="no_worse"``: how far (absolute) a rate may move the wrong way, and the
    # one-sided McNemar p-value below which a move past that is not put down to chance.
    no_worse_tolerance: float = 0.01
    no_worse_significance: float = 0.05


Targets = Literal["production", "no_worse"]


class VerdictChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    position: int  # 1-based, among the data's prompts
    text: str
    label: int
    old_flagged: bool
    new_flagged: bool


class GateReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    old: str
    new: str
    prompts: int
    regressions: int
    regression_rate: float
    improvements: int
    improvement_rate: float
    unchanged: int
    regression_examples: list[VerdictChange]
    improvement_examples: list[VerdictChange]
    new_metrics: ClassifierMetrics
    int8_loss: float | None
    rules: list[RuleResult]
    accepted: bool


@dataclass(frozen=True)
class Disagreement:
    """Among the prompts of one kind (benign, malicious, programming questions): how many the
    new model gets wrong that the old one got right (``worse``), and the reverse."""

    worse: int
    better: int

    @classmethod
    def of(cls, mask: np.ndarray, old_right: np.ndarray, new_right: np.ndarray) -> Disagreement:
        return cls(
            worse=int(np.sum(mask & old_right & ~new_right)),
            better=int(np.sum(mask & ~old_right & new_right)),
        )

    def p_value(self) -> float:
        """One-sided exact McNemar: the chance of at least ``worse`` of the disagreements
        going against the new model if neither model were better than the other."""
        n = self.worse + self.better
        return float(sum(math.comb(n, k) for k in range(self.worse, n + 1)) / 2**n)


@dataclass(frozen=True)
class Disagreements:
    benign: Disagreement
    malicious: Disagreement
    programming: Disagreement


def recorded_int8_loss(manifest: Manifest) -> float | None:
    """The INT8-vs-fp32 test accuracy loss (a fraction) that the trainer measured and wrote to
    the manifest as ``quantisation.accuracy_loss``; None when the model is not quantised."""
    quantisation = (manifest.model_extra or {}).get("quantisation")
    if not isinstance(quantisation, dict):
        return None
    loss = quantisation.get("accuracy_loss")
    return float(loss) if isinstance(loss, int | float) else None


def gate(
    prompts: Sequence[LabeledPrompt],
    old_flagged: Sequence[bool] | np.ndarray,
    new_flagged: Sequence[bool] | np.ndarray,
    *,
    old: str,
    new: str,
    int8_loss: float | None = None,
    limits: GateLimits | None = None,
    targets: Targets = "production",
) -> GateReport:
    """Judges the new model's verdicts against the old model's and the labels: against the
    production must-haves, or (``targets="no_worse"``) against the old model's own rates."""
    limits = limits or GateLimits()
    old_hits = np.asarray(old_flagged, dtype=bool)
    new_hits = np.asarray(new_flagged, dtype=bool)
    if not prompts or not len(prompts) == len(old_hits) == len(new_hits):
        raise ValueError(
            f"need one verdict per prompt from each model: {len(prompts)} prompts, "
            f"{len(old_hits)} old and {len(new_hits)} new verdicts"
        )
    truth = np.array([p.label == 1 for p in prompts])
    old_right = old_hits == truth
    new_right = new_hits == truth
    regressed = np.flatnonzero(old_right & ~new_right)
    improved = np.flatnonzero(~old_right & new_right)
    total = len(prompts)
    regression_rate = len(regressed) / total
    improvement_rate = len(improved) / total

    def changes(indices: np.ndarray) -> list[VerdictChange]:
        return [
            VerdictChange(
                position=int(i) + 1,
                text=prompts[i].text[:EXAMPLE_CHARS],
                label=prompts[i].label,
                old_flagged=bool(old_hits[i]),
                new_flagged=bool(new_hits[i]),
            )
            for i in indices[:EXAMPLES]
        ]

    metrics = classifier_metrics(prompts, new_hits)
    baseline = None
    if targets == "no_worse":
        programming = np.array([p.is_programming_question and not p.label for p in prompts])
        baseline = (
            classifier_metrics(prompts, old_hits),
            Disagreements(
                benign=Disagreement.of(~truth, old_right, new_right),
                malicious=Disagreement.of(truth, old_right, new_right),
                programming=Disagreement.of(programming, old_right, new_right),
            ),
        )
    rules = _rules(len(regressed), len(improved), total, metrics, baseline, int8_loss, limits)
    return GateReport(
        old=old,
        new=new,
        prompts=total,
        regressions=len(regressed),
        regression_rate=round(regression_rate, 6),
        improvements=len(improved),
        improvement_rate=round(improvement_rate, 6),
        unchanged=total - len(regressed) - len(improved),
        regression_examples=changes(regressed),
        improvement_examples=changes(improved),
        new_metrics=metrics,
        int8_loss=int8_loss,
        rules=rules,
        accepted=all(rule.status != "fail" for rule in rules),
    )


def _rule(
    rule: str, value: float | None, passes: Callable[[float], bool], detail: str
) -> RuleResult:
    """``value`` is None when there was nothing to measure; ``detail`` then says why."""
    if value is None:
        return RuleResult(rule=rule, status="not measured", value=None, detail=detail)
    return RuleResult(
        rule=rule,
        status="pass" if passes(value) else "fail",
        value=value,
        detail=f"{value:.2%} ({detail})",
    )


def _rules(
    regressions: int,
    improvements: int,
    total: int,
    metrics: ClassifierMetrics,
    baseline: tuple[ClassifierMetrics, Disagreements] | None,
    int8_loss: float | None,
    limits: GateLimits,
) -> list[RuleResult]:
    """The must-haves, or with a ``baseline`` (the old model's metrics) its rates as targets."""
    regression_rate = regressions / total
    improvement_rate = improvements / total
    hard_flagged = (
        metrics.hard_negatives_flagged / metrics.hard_negatives if metrics.hard_negatives else None
    )
    return [
        _rule(
            f"regressions <= {limits.max_regression_rate:.0%}",
            regression_rate,
            lambda rate: rate <= limits.max_regression_rate,
            f"{regressions:,} of {total:,} prompts",
        ),
        _rule(
            f"regressions <= {limits.caution_regression_rate:.0%} or improvements >= regressions",
            regression_rate,
            lambda rate: rate <= limits.caution_regression_rate or improvement_rate >= rate,
            f"{regressions:,} regressed, {improvements:,} improved ({improvement_rate:.2%})",
        ),
        *_target_rules(metrics, baseline, limits),
        _rule(
            "every hard negative benign",
            hard_flagged,
            lambda share: share == 0,
            f"{metrics.hard_negatives_flagged:,} of {metrics.hard_negatives:,} flagged"
            if metrics.hard_negatives
            else "no hard negative (notes starting 'HARD NEGATIVE:')",
        ),
        _rule(
            f"INT8 accuracy loss < {limits.max_int8_loss:.0%}",
            int8_loss,
            lambda loss: loss < limits.max_int8_loss,
            "recorded in the manifest" if int8_loss is not None else "not recorded in the manifest",
        ),
    ]


def _target_rules(
    metrics: ClassifierMetrics,
    baseline: tuple[ClassifierMetrics, Disagreements] | None,
    limits: GateLimits,
) -> list[RuleResult]:
    """FP rate, recall and programming-question FP rate: below the production limits, or
    (with a ``baseline``: the old model's metrics and where the two disagree) no worse than
    the old model's: within the tolerance, or not significantly worse."""
    matrix = metrics.confusion
    fp_detail = (
        f"{matrix.false_positives:,} of {matrix.benign:,} benign flagged"
        if matrix.benign
        else "no benign prompt"
    )
    recall_detail = (
        f"{matrix.true_positives:,} of {matrix.malicious:,} malicious flagged"
        if matrix.malicious
        else "no malicious prompt"
    )
    programming_detail = (
        f"{metrics.programming_false_positives:,} of {metrics.programming_questions:,} flagged"
        if metrics.programming_questions
        else "no programming question"
    )
    if baseline is None:
        return [
            _rule(
                f"FP rate < {limits.max_fp_rate:.0%}",
                metrics.fp_rate,
                lambda rate: rate < limits.max_fp_rate,
                fp_detail,
            ),
            _rule(
                f"recall > {limits.min_recall:.0%}",
                metrics.recall,
                lambda rate: rate > limits.min_recall,
                recall_detail,
            ),
            _rule(
                f"programming-question FP rate < {limits.max_programming_fp_rate:.1%}",
                metrics.programming_fp_rate,
                lambda rate: rate < limits.max_programming_fp_rate,
                programming_detail,
            ),
        ]
    old_metrics, disagree = baseline
    tolerance, alpha = limits.no_worse_tolerance, limits.no_worse_significance

    def no_worse(
        name: str,
        new: float | None,
        old: float | None,
        worse_by: Callable[[float, float], float],
        disagreement: Disagreement,
        detail: str,
    ) -> RuleResult:
        p = disagreement.p_value()
        return _rule(
            f"{name} no worse than old (by > {tolerance:.0%} with McNemar p < {alpha:g})",
            new,
            lambda rate: old is None or worse_by(rate, old) <= tolerance or p >= alpha,
            f"{detail}; old {percent(old, unit='%', missing='n/a')}; {disagreement.worse} worse, "
            f"{disagreement.better} better, p = {p:.3g}",
        )

    return [
        no_worse(
            "FP rate",
            metrics.fp_rate,
            old_metrics.fp_rate,
            lambda new, old: new - old,
            disagree.benign,
            fp_detail,
        ),
        no_worse(
            "recall",
            metrics.recall,
            old_metrics.recall,
            lambda new, old: old - new,
            disagree.malicious,
            recall_detail,
        ),
        no_worse(
            "programming-question FP rate",
            metrics.programming_fp_rate,
            old_metrics.programming_fp_rate,
            lambda new, old: new - old,
            disagree.programming,
            programming_detail,
        ),
    ]
