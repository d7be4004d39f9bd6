"""Robustness scenarios: the loop judged on populations, not on one file.

Each scenario is a population of tenants built from a labelled file (real prompts nobody here
wrote) and the generated corpus' held-out test split; tenant ``A`` reports, any other tenant
sends traffic and reports nothing:

- ``a``: the file as ``A``'s traffic (what ``l2loop loop simulate`` does);
- ``b``: a population whose attacks the model already catches: the file's benign prompts and
  the generated corpus' held-out attacks, as ``A``'s traffic;
- ``c``: two tenants. The file's sources that hold only benign prompts are dealt between
  ``A`` and ``B`` by a seeded draw (``B`` gets half, rounded down); every source holding
  attacks stays with ``A``; the generated corpus' held-out non-English prompts go to ``B``.
  ``B``'s traffic is other sources and other languages, and it reports nothing.

Each tenant's prompts are split in halves (``split_halves``); one cycle is simulated offline
from ``A``'s reports on its replayed half (``l2loop.demo.loop_replay.learn_from``), the
candidate gated as a quarterly cycle gates it, with every tenant's replayed half as the
recent traffic the counterfactual replay reads. Success (the bar of the issue that asked for
this suite): the gate accepts; ``A``'s held-out FP rate at least halves and its recall loses
at most a point; every other tenant's FP rate and recall move at most a point the wrong way;
the flag rate on non-English benign prompts (golden set and generated corpus) rises at most
a point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from l2loop.demo.figures import generated_language, non_english_benign
from l2loop.demo.loop_replay import learn_from, sample_prompts, source_of, split_halves
from l2loop.logs import get_logger
from l2loop.settings import Settings
from l2loop.workers.retraining.dataset import base_corpus
from l2model.corpus import CorpusSplit
from l2model.evaluation import LabeledPrompt, binary_report, percent, read_labeled, score_texts
from l2model.record import TrainingRecord, seeded_rank
from l2model.runtime import L2Model

log = get_logger(__name__)

SCENARIOS = ("a", "b", "c")
REPORTING = "A"
SILENT = "B"
GENERATED_SOURCE = "l2model/generated-corpus"
# How far a figure may move the wrong way and still count as unharmed: one point.
TOLERANCE = 0.01


def generated_prompt(record: TrainingRecord) -> LabeledPrompt:
    return LabeledPrompt(
        text=record.text,
        label=record.label,
        family=record.family if record.label else None,
        category=record.sub_category or None,
        notes=record.notes or None,
        source=GENERATED_SOURCE,
        lang=generated_language(record),
    )


def population(
    name: str, prompts: Sequence[LabeledPrompt], generated: CorpusSplit, seed: int
) -> dict[str, list[LabeledPrompt]]:
    """The tenants of scenario ``name`` and their prompts."""
    held_out = [generated_prompt(r) for r in generated.test]
    if name == "a":
        return {REPORTING: list(prompts)}
    if name == "b":
        return {
            REPORTING: [
                *(p for p in prompts if p.label == 0),
                *(p for p in held_out if p.label == 1),
            ]
        }
    if name != "c":
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    with_attacks = {p.source for p in prompts if p.label == 1}
    benign_only = sorted(
        {p.source for p in prompts} - with_attacks, key=lambda s: seeded_rank(seed, s or "")
    )
    silent_sources = set(benign_only[: len(benign_only) // 2])
    return {
        REPORTING: [p for p in prompts if p.source not in silent_sources],
        SILENT: [
            *(p for p in prompts if p.source in silent_sources),
            *(p for p in held_out if p.lang != "en"),
        ],
    }


class TenantFigures(BaseModel):
    """One tenant's held-out half before and after the cycle."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    sources: list[str]
    benign: int
    malicious: int
    fp_before: float | None
    fp_after: float | None
    recall_before: float | None
    recall_after: float | None


class ScenarioResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    scenario: str
    seed: int
    reported: int
    examples: int
    accepted: bool
    failed_rules: list[str]
    tenants: list[TenantFigures]
    non_english_benign: int
    non_english_before: float
    non_english_after: float
    failures: list[str]

    @property
    def success(self) -> bool:
        return not self.failures


def _rate(report: dict[str, float | int], key: str, count: str) -> float | None:
    return float(report[key]) if report[count] else None


def tenant_figures(
    tenant: str, held_out: Sequence[LabeledPrompt], before: L2Model, after: L2Model
) -> TenantFigures:
    labels = np.array([p.label for p in held_out])
    texts = [p.text for p in held_out]
    old = binary_report(labels, score_texts(before, texts) >= before.threshold)
    new = binary_report(labels, score_texts(after, texts) >= after.threshold)
    return TenantFigures(
        tenant=tenant,
        sources=sorted({source_of(p) for p in held_out}),
        benign=int((labels == 0).sum()),
        malicious=int((labels == 1).sum()),
        fp_before=_rate(old, "fp_rate", "benign"),
        fp_after=_rate(new, "fp_rate", "benign"),
        recall_before=_rate(old, "recall", "malicious"),
        recall_after=_rate(new, "recall", "malicious"),
    )


def _worse(before: float | None, after: float | None, *, higher_is_worse: bool) -> float:
    """How far a rate moved the wrong way (0 when it did not, or is undefined)."""
    if before is None or after is None:
        return 0.0
    return after - before if higher_is_worse else before - after


def failures(result: ScenarioResult) -> list[str]:
    """Why a scenario's cycle falls short of the bar, one line per reason (none: success)."""
    found = [] if result.accepted else ["the gate rejected the candidate"]
    for t in result.tenants:
        fp = f"{t.tenant}: FP {percent(t.fp_before, 1)} -> {percent(t.fp_after, 1)}"
        if t.tenant == REPORTING and t.fp_before is not None and t.fp_after is not None:
            if t.fp_after > t.fp_before / 2:
                found.append(f"{fp}, not halved")
        elif _worse(t.fp_before, t.fp_after, higher_is_worse=True) > TOLERANCE:
            found.append(fp)
        if _worse(t.recall_before, t.recall_after, higher_is_worse=False) > TOLERANCE:
            found.append(
                f"{t.tenant}: recall {percent(t.recall_before, 1)} -> {percent(t.recall_after, 1)}"
            )
    if result.non_english_after - result.non_english_before > TOLERANCE:
        found.append(
            f"non-English benign flagged {percent(result.non_english_before, 1)} -> "
            f"{percent(result.non_english_after, 1)}"
        )
    return found


def run_scenario(
    settings: Settings,
    name: str,
    prompts: Sequence[LabeledPrompt],
    out_dir: Path,
    *,
    share: float,
    seed: int,
    review_share: float = 0.0,
) -> ScenarioResult:
    """One scenario on one seed: a cycle learned from ``A``'s reports, every tenant measured
    on its held-out half."""
    generated = base_corpus(settings.base_corpus_size, settings.base_corpus_seed)
    tenants = population(name, prompts, generated, seed)
    halves = {tenant: split_halves(members, seed) for tenant, members in tenants.items()}
    current = L2Model.load(settings.model_dir)
    learned = learn_from(
        settings,
        halves[REPORTING][0],
        current,
        out_dir,
        share=share,
        seed=seed,
        review_share=review_share,
        tenant=REPORTING,
        others={name: replayed for name, (replayed, _) in halves.items() if name != REPORTING},
    )
    candidate = learned.candidate
    texts = non_english_benign(settings.golden_version, generated)
    result = ScenarioResult(
        scenario=name,
        seed=seed,
        reported=learned.reports.fp_reported + learned.reports.fn_reported,
        examples=len(learned.reports.examples),
        accepted=candidate.accepted,
        failed_rules=candidate.failed_rules(),
        tenants=[
            tenant_figures(tenant, held_out, current, candidate.model)
            for tenant, (_, held_out) in halves.items()
        ],
        non_english_benign=len(texts),
        non_english_before=float(np.mean(score_texts(current, texts) >= current.threshold)),
        non_english_after=float(
            np.mean(score_texts(candidate.model, texts) >= candidate.model.threshold)
        ),
        failures=[],
    )
    result = result.model_copy(update={"failures": failures(result)})
    log.info(
        "scenario_finished",
        scenario=name,
        seed=seed,
        accepted=result.accepted,
        success=result.success,
        failures=result.failures,
    )
    return result


def run_scenarios(
    settings: Settings,
    data: Path,
    out_dir: Path,
    *,
    names: Sequence[str],
    seeds: Sequence[int],
    share: float,
    review_share: float = 0.0,
    sample: int | None = None,
) -> list[ScenarioResult]:
    prompts = read_labeled(data)
    results = []
    for seed in seeds:
        chosen = prompts if sample is None else sample_prompts(prompts, sample, seed)
        for name in names:
            results.append(
                run_scenario(
                    settings,
                    name,
                    chosen,
                    out_dir / f"{name}-{seed}",
                    share=share,
                    seed=seed,
                    review_share=review_share,
                )
            )
    return results


def _figure(rate: float | None) -> str:
    return percent(rate, 1, unit="")


def render_scenarios(results: Sequence[ScenarioResult], data: Path, share: float) -> str:
    """One row per scenario, seed and tenant: FP rate and recall (%) before -> after."""
    lines = [
        f"# Loop scenarios on {data.name} and the generated corpus (report share {share})",
        "",
        "| scenario | seed | tenant | benign | FP before → after | malicious | "
        "recall before → after | non-English benign flagged | gate | result |",
        "|---|---:|---|---:|---|---:|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r.scenario, r.seed)):
        for t in r.tenants:
            verdict = "ok" if r.success else "; ".join(r.failures)
            moves = (
                f"{_figure(before)} → {_figure(after)}"
                for before, after in (
                    (t.fp_before, t.fp_after),
                    (t.recall_before, t.recall_after),
                    (r.non_english_before, r.non_english_after),
                )
            )
            fp, recall, non_english = moves
            lines.append(
                f"| {r.scenario} | {r.seed} | {t.tenant} | {t.benign} | {fp} | {t.malicious} | "
                f"{recall} | {non_english} | "
                f"{'accepted' if r.accepted else 'rejected'} | {verdict} |"
            )
    passed = sum(r.success for r in results)
    lines += ["", f"{passed} of {len(results)} runs meet the bar."]
    return "\n".join(lines) + "\n"
