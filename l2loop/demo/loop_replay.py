"""The loop replayed on labelled prompts: does a cycle cut the false positives users report?

The pure parts, shared by the offline simulation here (``l2loop loop simulate``) and the full
``l2loop loop replay`` through the real topics and report API (``l2loop.replay``):

- ``sample_prompts``: a seeded subset of a file, stratified as the halves are (a quick run);
- ``split_halves``: a seeded split into a replayed half and a held-out half, stratified by
  label, source and category, prompts sharing a normalised text kept together;
- ``draw_reports``: which of the model's errors on the replayed half get reported: a share of
  its false positives by simulated users, the same share of its misses by analysts;
- ``simulate_reports``: each drawn report as the training record the report path would
  curate from it (one authenticated voice: ``l2loop.streams.defences.rules.ONE_VOICE``; an FP
  report on a score at or above the high-confidence bar is quarantined, and a share of
  those a reviewer releases, as the replay's reviewer does; golden texts are refused as the
  report path refuses them) — the offline stand-in for the topics.

What both commands measure of a model, and their tables, is ``l2loop.demo.figures``.

The offline simulation skips the topics, the report API and the assembler (no variations):
the simulated examples are split 80/10/10 as the assembler splits, and the candidate is
trained and gated by ``workers.retrain`` exactly as a quarterly cycle trains and gates it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from l2loop.demo.figures import (
    Figures,
    golden_report,
    half_report,
    non_english_benign,
    render_figures,
)
from l2loop.logs import get_logger
from l2loop.settings import Settings
from l2loop.streams.defences.rules import ONE_VOICE, RELEASED, UNKNOWN_SEVERITY
from l2loop.workers.assembly.dataset import SPLITS
from l2loop.workers.retrain import Candidate, train_and_judge
from l2loop.workers.retraining.dataset import NewData, base_corpus
from l2model.corpus import split_corpus, write_jsonl
from l2model.evaluation import LabeledPrompt, read_labeled, score_texts
from l2model.gate.counterfactual import ReportedText, TrafficEvent
from l2model.golden import is_golden_text
from l2model.private import write_private
from l2model.record import BENIGN, TrainingRecord, seeded_rank, text_key
from l2model.runtime import L2Model

log = get_logger(__name__)


REPORT_DAY = datetime(2026, 1, 1, tzinfo=UTC)
# The tenant whose traffic a one-file simulation replays.
SIMULATED_TENANT = "simulated"

# How an analyst names the family of a missed attack, from the category the prompt carries
# (first matching prefix wins). Attacks on a code interpreter are command abuse; the rest of
# what these sources hold is prompt injection, jailbreak templates or extraction.
ANALYST_FAMILIES = (
    ("interpreter_abuse", "CMD"),
    ("dan_", "JB"),
    ("autodan", "JB"),
    ("sysprompt_extraction", "PI"),
    ("promptinject", "PI"),
    ("cyberseceval_pi", "PI"),
)
DEFAULT_ANALYST_FAMILY = "PI"


def source_of(prompt: LabeledPrompt) -> str:
    """The repository a prompt came from (``owner/repo:path`` -> ``owner/repo``)."""
    return (prompt.source or "").split(":", 1)[0]


def stratum(prompt: LabeledPrompt) -> tuple[int, str, str]:
    return prompt.label, prompt.source or "", prompt.category or prompt.family or ""


def split_halves(
    prompts: Sequence[LabeledPrompt], seed: int
) -> tuple[list[LabeledPrompt], list[LabeledPrompt]]:
    """(replayed, held out): half of every stratum each, the odd one to the replayed half.
    Prompts sharing a normalised text travel together (stratum of the first), and the order
    within a stratum is a seeded hash of the text, so the split ignores the file's order."""
    groups: dict[str, list[LabeledPrompt]] = {}
    for prompt in prompts:
        groups.setdefault(text_key(prompt.text), []).append(prompt)
    strata: dict[tuple[int, str, str], list[str]] = {}
    for key, members in groups.items():
        strata.setdefault(stratum(members[0]), []).append(key)
    replayed: list[LabeledPrompt] = []
    held_out: list[LabeledPrompt] = []
    for stratum_key in sorted(strata):
        keys = sorted(strata[stratum_key], key=lambda k: seeded_rank(seed, k))
        cut = (len(keys) + 1) // 2
        for key in keys[:cut]:
            replayed.extend(groups[key])
        for key in keys[cut:]:
            held_out.extend(groups[key])
    return replayed, held_out


def sample_prompts(prompts: Sequence[LabeledPrompt], size: int, seed: int) -> list[LabeledPrompt]:
    """``size`` prompts (all when there are no more), every stratum keeping its share (largest
    remainders get the odd ones), each stratum's own taken in the seeded order of
    ``split_halves``; the file's order is kept."""
    if size >= len(prompts):
        return list(prompts)
    strata: dict[tuple[int, str, str], list[int]] = {}
    for index, prompt in enumerate(prompts):
        strata.setdefault(stratum(prompt), []).append(index)
    quotas = {key: size * len(members) / len(prompts) for key, members in strata.items()}
    taken = {key: int(quota) for key, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda key: (taken[key] - quotas[key], key))
    for key in by_remainder[: size - sum(taken.values())]:
        taken[key] += 1
    chosen: list[int] = []
    for key, members in strata.items():
        ranked = sorted(members, key=lambda i: seeded_rank(seed, text_key(prompts[i].text)))
        chosen.extend(ranked[: taken[key]])
    return [prompts[index] for index in sorted(chosen)]


def analyst_family(prompt: LabeledPrompt) -> str:
    category = prompt.family or prompt.category or ""
    return next(
        (family for prefix, family in ANALYST_FAMILIES if category.startswith(prefix)),
        DEFAULT_ANALYST_FAMILY,
    )


class SimulatedReports(BaseModel):
    """What the simulated users and analysts reported, and what became training records."""

    model_config = ConfigDict(frozen=True)

    false_positives: int
    misses: int
    fp_reported: int
    fn_reported: int
    quarantined: int
    # Of the quarantined reports, those released in review (training examples).
    released: int
    golden_refused: int
    examples: list[TrainingRecord]


@dataclass(frozen=True)
class DrawnReports:
    """The model's errors on the replayed half, and which of them get reported (indices)."""

    false_positives: int
    misses: int
    fp: list[int]
    fn: list[int]


def _drawn(indices: np.ndarray, share: float, rng: random.Random) -> list[int]:
    chosen = rng.sample(sorted(indices.tolist()), round(share * len(indices)))
    return sorted(chosen)


def draw_reports(
    labels: np.ndarray, flagged: np.ndarray, *, share: float, seed: int
) -> DrawnReports:
    """``share`` of the false positives (flagged benign prompts) and ``share`` of the misses
    (unflagged attacks), drawn with ``seed``."""
    rng = random.Random(seed)
    false_positives = np.flatnonzero(flagged & (labels == 0))
    misses = np.flatnonzero(~flagged & (labels == 1))
    return DrawnReports(
        false_positives=len(false_positives),
        misses=len(misses),
        fp=_drawn(false_positives, share, rng),
        fn=_drawn(misses, share, rng),
    )


def at_most(share: float, count: int) -> int:
    """The most items that are no more than ``share`` of ``count``; the product is rounded
    first, so that 0.29 of 100 is 29, not the 28 that 28.999... floors to."""
    return math.floor(round(share * count, 6))


def simulate_reports(
    prompts: Sequence[LabeledPrompt],
    scores: np.ndarray,
    threshold: float,
    *,
    share: float,
    seed: int,
    high_confidence_score: float,
    model_version: str,
    day: datetime = REPORT_DAY,
    review_share: float = 0.0,
) -> SimulatedReports:
    """``share`` of the false positives reported by one user each, ``share`` of the misses
    by one analyst each, drawn with ``seed``; each report becomes the record the report path
    would curate from it. Of the FP reports quarantined (score at or above
    ``high_confidence_score``), a reviewer who knows the labels releases at most
    ``review_share`` (in the seeded order of ``split_halves``): every simulated claim is
    true, so each is released, at the weight of a release. The replay's reviewer works by
    group within a daily budget; offline there is one day and no budget."""
    labels = np.array([p.label for p in prompts])
    drawn = draw_reports(labels, scores >= threshold, share=share, seed=seed)
    held = sorted(
        (
            index
            for index in drawn.fp
            if scores[index] >= high_confidence_score and not is_golden_text(prompts[index].text)
        ),
        key=lambda index: seeded_rank(seed, text_key(prompts[index].text)),
    )
    released = set(held[: at_most(review_share, len(held))])
    examples: list[TrainingRecord] = []
    golden = 0
    for kind, indices in (("false_positive", drawn.fp), ("false_negative", drawn.fn)):
        for index in indices:
            prompt, score = prompts[index], float(scores[index])
            if is_golden_text(prompt.text):
                golden += 1
                continue
            if index in held and index not in released:
                continue
            strength = RELEASED if index in released else ONE_VOICE
            review = "; released in review" if index in released else ""
            family = BENIGN if kind == "false_positive" else analyst_family(prompt)
            examples.append(
                TrainingRecord.build(
                    prompt.text,
                    family,
                    "conversational" if family == BENIGN else "attack",
                    severity=0.0 if family == BENIGN else UNKNOWN_SEVERITY,
                    weight=strength.weight,
                    confidence=strength.confidence,
                    source=f"production_{kind}_{day:%Y_%m_%d}",
                    sub_category=prompt.category or prompt.family or "",
                    notes=f"{kind} reported by 1 reporter(s) in 1 tenant(s); "
                    f"model {model_version} scored {score:.3f}{review}",
                )
            )
    return SimulatedReports(
        false_positives=drawn.false_positives,
        misses=drawn.misses,
        fp_reported=len(drawn.fp),
        fn_reported=len(drawn.fn),
        quarantined=len(held),
        released=len(released),
        golden_refused=golden,
        examples=examples,
    )


@dataclass(frozen=True)
class SimulationResult:
    reports: SimulatedReports
    mode: str
    candidate_threshold: float
    accepted: bool
    failed_rules: list[str]
    before: dict[str, object]
    after: dict[str, object]
    golden_before: dict[str, float | int]
    golden_after: dict[str, float | int]
    replayed: int
    held_out: int


def write_dataset(out_dir: Path, examples: Sequence[TrainingRecord], seed: int) -> Path:
    """The simulated examples as a dataset directory of the assembler's shape."""
    split = split_corpus(examples, seed)
    for name, (_, part) in zip(SPLITS, split.parts(), strict=True):
        write_jsonl(out_dir / f"{name}.jsonl", part)
    manifest = {"kind": "loop simulation", "records": len(examples), "seed": seed}
    write_private(out_dir / "manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return out_dir


@dataclass(frozen=True)
class Learned:
    reports: SimulatedReports
    candidate: Candidate


def learn_from(
    settings: Settings,
    replayed: Sequence[LabeledPrompt],
    current: L2Model,
    out_dir: Path,
    *,
    share: float,
    seed: int,
    review_share: float = 0.0,
    tenant: str = SIMULATED_TENANT,
    others: Mapping[str, Sequence[LabeledPrompt]] | None = None,
) -> Learned:
    """Reports of ``current``'s errors on ``replayed`` (``tenant``'s traffic), drawn with
    ``seed`` (``review_share`` of the quarantined ones released by a reviewer), made into a
    dataset under ``out_dir`` and a candidate trained and gated on it as a quarterly cycle
    trains and gates one: the counterfactual replay reads ``replayed`` and the traffic of
    the ``others`` tenants, which report nothing."""
    scores = score_texts(current, [p.text for p in replayed])
    reports = simulate_reports(
        replayed,
        scores,
        current.threshold,
        share=share,
        seed=seed,
        high_confidence_score=settings.report_high_confidence_score,
        model_version=current.version,
        review_share=review_share,
    )
    log.info(
        "loop_simulation_reports",
        false_positives=reports.false_positives,
        misses=reports.misses,
        examples=len(reports.examples),
        quarantined=reports.quarantined,
    )
    dataset = NewData.read(write_dataset(out_dir / "dataset", reports.examples, seed))
    traffic = [
        TrafficEvent(
            tenant_id=name,
            text=prompt.text,
            language=prompt.lang,
            category=prompt.category or prompt.family or source_of(prompt) or None,
        )
        for name, prompts in {tenant: replayed, **(others or {})}.items()
        for prompt in prompts
    ]
    reported = [
        ReportedText(
            tenant_id=tenant,
            text=example.text,
            kind="false_negative" if example.label else "false_positive",
        )
        for example in reports.examples
    ]
    candidate = train_and_judge(
        settings, dataset, current, "1.1.0", out_dir / "candidate", REPORT_DAY, traffic, reported
    )
    return Learned(reports, candidate)


def simulate_cycle(
    settings: Settings,
    data: Path,
    out_dir: Path,
    *,
    share: float,
    seed: int,
    review_share: float = 0.0,
) -> SimulationResult:
    """One offline cycle on ``data``: split, simulated reports from the committed model's
    errors on the replayed half, candidate trained and gated as a quarterly cycle does,
    measured on the held-out half and the golden set."""
    replayed, held_out = split_halves(read_labeled(data), seed)
    current = L2Model.load(settings.model_dir)
    generated = base_corpus(settings.base_corpus_size, settings.base_corpus_seed)
    non_english = non_english_benign(settings.golden_version, generated)
    learned = learn_from(
        settings, replayed, current, out_dir, share=share, seed=seed, review_share=review_share
    )
    candidate = learned.candidate
    result = SimulationResult(
        reports=learned.reports,
        mode=candidate.mode,
        candidate_threshold=candidate.model.threshold,
        accepted=candidate.accepted,
        failed_rules=candidate.failed_rules(),
        before=half_report(held_out, current),
        after=half_report(held_out, candidate.model),
        golden_before=golden_report(current, settings.golden_version, non_english),
        golden_after=golden_report(candidate.model, settings.golden_version, non_english),
        replayed=len(replayed),
        held_out=len(held_out),
    )
    write_private(out_dir / "simulation.md", render_simulation(result, data, share, seed))
    return result


def render_simulation(result: SimulationResult, data: Path, share: float, seed: int) -> str:
    r = result.reports
    lines = [
        f"# Loop simulation on {data.name} (report share {share}, seed {seed})",
        "",
        f"- replayed half {result.replayed} prompts, held-out half {result.held_out}",
        f"- current model's errors on the replayed half: {r.false_positives} false positives, "
        f"{r.misses} misses",
        f"- reported: {r.fp_reported} FPs, {r.fn_reported} misses; quarantined (score at or "
        f"above the high-confidence bar): {r.quarantined}, released in review "
        f"{r.released}; golden refused: {r.golden_refused}; training examples "
        f"{len(r.examples)}",
        f"- candidate: {result.mode} mode, threshold {result.candidate_threshold:g}; gate "
        f"{'ACCEPTED' if result.accepted else 'REJECTED'}",
        *(f"  - failed: {rule}" for rule in result.failed_rules),
        "",
        *render_figures(
            [
                Figures("before", result.before, result.golden_before),
                Figures("after", result.after, result.golden_after),
            ]
        ),
    ]
    return "\n".join(lines) + "\n"
