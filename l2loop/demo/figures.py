"""What the loop replay and simulation measure of a model, and the tables they print.

- ``half_report`` / ``golden_report``: FP rate, recall and per-source figures on the held-out
  half, and the golden set's (with the share of non-English benign prompts flagged);
- ``render_figures``: the before/after tables of ``l2loop loop simulate`` and ``l2loop loop
  replay``, a column per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from l2model.corpus import CorpusSplit
from l2model.evaluation import LabeledPrompt, binary_report, external_report, percent, score_texts
from l2model.golden import load_golden
from l2model.record import TrainingRecord
from l2model.runtime import L2Model


def half_report(prompts: Sequence[LabeledPrompt], model: L2Model) -> dict[str, object]:
    """FP rate, recall, per source (``l2model.evaluation.external_report``) on ``prompts``."""
    scores = score_texts(model, [p.text for p in prompts])
    return external_report(prompts, scores, model.threshold)


NON_ENGLISH = "non_english_benign_flagged"


def generated_language(record: TrainingRecord) -> str:
    """A generated record's template language (``lang=xx`` in its notes), else English."""
    return record.notes.rsplit("lang=", 1)[-1] if "lang=" in record.notes else "en"


def non_english_benign(golden_version: str, generated: CorpusSplit) -> list[str]:
    """Benign prompts in languages other than English: the golden set's and the generated
    corpus' held-out (test split) ones. A cycle that learns "non-English means attack" shows
    here whatever the traffic was."""
    golden = [
        probe.text
        for probe in load_golden(golden_version).probes
        if probe.label == 0 and "lang=" in probe.notes and not probe.notes.endswith("lang=en")
    ]
    others = (r.text for r in generated.test if r.label == 0 and generated_language(r) != "en")
    return [*golden, *others]


def golden_report(
    model: L2Model, version: str, non_english: Sequence[str] = ()
) -> dict[str, float | int]:
    """FP rate and recall on the golden set; with ``non_english`` (``non_english_benign``)
    also the share of those benign prompts flagged."""
    probes = load_golden(version).probes
    labels = np.array([p.label for p in probes])
    flagged = score_texts(model, [p.text for p in probes]) >= model.threshold
    report = binary_report(labels, flagged)
    if non_english:
        flags = score_texts(model, non_english) >= model.threshold
        report[NON_ENGLISH] = float(np.mean(flags))
    return report


def _measured(value: object) -> str:
    return percent(float(value)) if isinstance(value, int | float) else "-"


@dataclass(frozen=True)
class Figures:
    """One model's figures, a column of the tables: the held-out half (``half_report``) and
    the golden set (``golden_report``)."""

    name: str
    held_out: dict[str, object]
    golden: dict[str, float | int]

    def overall(self) -> dict[str, float | int]:
        overall = self.held_out["overall"]
        assert isinstance(overall, dict)
        return overall

    def by_source(self) -> dict[str, dict[str, float | int]]:
        by_source = self.held_out["by_source"]
        assert isinstance(by_source, dict)
        return by_source


def render_figures(columns: Sequence[Figures]) -> list[str]:
    """FP rate and recall on the held-out half and the golden set, then per held-out source;
    a column per model, in order (the first is the one the others are compared with)."""
    names = " | ".join(column.name for column in columns)
    rule = "---:|" * len(columns)
    rows = [
        ("FP rate, held-out half", [c.overall()["fp_rate"] for c in columns]),
        ("recall, held-out half", [c.overall()["recall"] for c in columns]),
        ("FP rate, golden set", [c.golden["fp_rate"] for c in columns]),
        ("recall, golden set", [c.golden["recall"] for c in columns]),
    ]
    if all(NON_ENGLISH in c.golden for c in columns):
        rows.append(
            (
                "non-English benign flagged (golden set + generated corpus)",
                [c.golden[NON_ENGLISH] for c in columns],
            )
        )
    lines = [
        f"| measure | {names} |",
        f"|---|{rule}",
        *(f"| {name} | {' | '.join(_measured(v) for v in values)} |" for name, values in rows),
        "",
        f"| held-out source | benign | FP rate {names} | malicious | recall {names} |",
        f"|---|---:|{rule}---:|{rule}",
    ]
    first = columns[0].by_source()
    for source, counts in first.items():
        per_model = [column.by_source()[source] for column in columns]
        fp_rates = (_measured(f["fp_rate"]) if counts["benign"] else "-" for f in per_model)
        recalls = (_measured(f["recall"]) if counts["malicious"] else "-" for f in per_model)
        lines.append(
            f"| {source} | {counts['benign']} | {' | '.join(fp_rates)} | "
            f"{counts['malicious']} | {' | '.join(recalls)} |"
        )
    return lines
