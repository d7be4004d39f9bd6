"""``l2loop model``: build the lite model and its fast form, evaluate any model directory on
labeled JSONL, and gate a candidate against the model in service.

Exit codes: 0 done (``gate``: accepted), 1 ``gate`` rejected, 2 usage error (a missing or
unusable model directory or data file included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import orjson
from pydantic import BaseModel

from l2model.artifacts import default_fast_dir, default_lite_dir
from l2model.corpus import DEFAULT_SIZE
from l2model.eval_report import LATENCY_SAMPLE, EvalReport, ModelInfo, evaluate
from l2model.evaluation import LabeledPrompt, percent, read_labeled, score_texts
from l2model.gate.labelled import GateReport, VerdictChange, gate, recorded_int8_loss
from l2model.runtime import L2Model

MODEL_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
DATA_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def model() -> None:
    """The L2 model: build, evaluate, gate."""


def _read_data(path: Path) -> list[LabeledPrompt]:
    try:
        return read_labeled(path)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="DATA") from error


def _load_model(model_dir: Path, threads: int, param: str) -> L2Model:
    try:
        return L2Model.load(model_dir, threads=threads)
    # onnxruntime's load errors derive from Exception alone; any of them means the
    # directory is not a usable model, which is the caller's to fix.
    except Exception as error:
        raise click.BadParameter(f"{model_dir}: {error}", param_hint=param) from error


def _write_report(report: BaseModel, out: Path | None) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    click.echo(f"report written to {out}")


def _percent(value: float | None) -> str:
    return percent(value, unit="%", missing="n/a")


@model.command("eval")
@click.argument("model_dir", metavar="MODEL", type=MODEL_DIR)
@click.argument("data", type=DATA_FILE)
@click.option("--out", type=OUT_FILE, default=None, help="write the JSON report here")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--latency-sample",
    type=click.IntRange(min=1),
    default=LATENCY_SAMPLE,
    show_default=True,
    help="prompts timed one at a time",
)
def eval_command(
    model_dir: Path, data: Path, out: Path | None, threads: int, latency_sample: int
) -> None:
    """Evaluate the model directory MODEL on DATA, a JSONL file of objects with at least
    `text` and `label` (0 benign, 1 malicious); optional `family`, `sub_category`
    (`programming_...` marks a programming question) and `notes` (`HARD NEGATIVE: ...`)
    add per-family recall, the programming-question FP rate and the hard negatives."""
    prompts = _read_data(data)
    loaded = _load_model(model_dir, threads, "MODEL")
    report = evaluate(
        loaded, prompts, data=str(data), threads=threads, latency_sample=latency_sample
    )
    click.echo(_eval_summary(report))
    _write_report(report, out)


def _eval_summary(report: EvalReport) -> str:
    m = report.metrics
    c = m.confusion
    lines = [
        f"model     {report.model}  {report.model.path}",
        f"data      {report.data}: {m.prompts:,} prompts, {c.benign:,} benign, "
        f"{c.malicious:,} malicious; {report.truncated:,} longer than "
        f"{report.model.max_chars:,} characters, scored on their start",
        "",
        "                     flagged   not flagged",
        f"  malicious      {c.true_positives:>10,} {c.false_negatives:>13,}",
        f"  benign         {c.false_positives:>10,} {c.true_negatives:>13,}",
        "",
        f"FP rate           {_percent(m.fp_rate):>8}   "
        f"({c.false_positives:,} of {c.benign:,} benign)",
        f"recall            {_percent(m.recall):>8}   "
        f"({c.true_positives:,} of {c.malicious:,} malicious)",
        f"precision         {_percent(m.precision):>8}",
        f"F1                {_percent(m.f1):>8}",
        f"accuracy          {_percent(m.accuracy):>8}",
        f"programming FP    {_percent(m.programming_fp_rate):>8}   "
        f"({m.programming_false_positives:,} of {m.programming_questions:,} programming questions)",
        f"hard negatives    {m.hard_negatives_flagged:,} of {m.hard_negatives:,} flagged",
    ]
    for title, groups in (
        ("recall by family", m.recall_by_family),
        ("FP rate by category", m.fp_rate_by_category),
    ):
        if groups is not None:
            width = max(map(len, groups))
            lines += ["", title]
            lines += [
                f"  {name:<{width}}  {_percent(g.rate):>8}   ({g.flagged:,} of {g.prompts:,})"
                for name, g in groups.items()
            ]
    cal = report.calibration
    verdict = {None: "no confident prediction", True: "met", False: "NOT met"}[cal.meets_target]
    lines += [
        "",
        f"calibration: {_percent(cal.confident_accuracy)} of {cal.confident:,} confident "
        f"predictions (score >= {cal.confidence:g} or <= {1 - cal.confidence:.2f}) are right; "
        f"target {cal.target:.0%}: {verdict}",
        f"  expected calibration error {cal.expected_calibration_error:.4f}",
        "  score bucket   prompts  mean score  threat share",
    ]
    lines += [
        f"  {b.low:.1f}-{b.high:.1f}     {b.prompts:>9,}  "
        f"{'-' if b.mean_score is None else f'{b.mean_score:.3f}':>10}  "
        f"{'-' if b.threat_share is None else f'{b.threat_share:.3f}':>12}"
        for b in cal.buckets
    ]
    lat = report.latency
    lines += [
        "",
        f"latency ({lat.threads} threads): one prompt p50 {lat.single.p50_ms:.2f} ms, "
        f"p95 {lat.single.p95_ms:.2f} ms ({lat.single.prompts:,} prompts); "
        f"batched {lat.batched_prompts_per_s:,.0f} prompts/s (batches of {lat.batch_size})",
    ]
    return "\n".join(lines)


@model.command("gate")
@click.argument("old_dir", metavar="OLD", type=MODEL_DIR)
@click.argument("new_dir", metavar="NEW", type=MODEL_DIR)
@click.argument("data", type=DATA_FILE)
@click.option("--out", type=OUT_FILE, default=None, help="write the JSON report here")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--targets",
    type=click.Choice(["production", "no-worse"]),
    default="production",
    show_default=True,
    help="judge NEW's rates against the production must-haves, or against OLD's own rates "
    "(as the loop judges its candidates)",
)
@click.pass_context
def gate_command(
    ctx: click.Context,
    old_dir: Path,
    new_dir: Path,
    data: Path,
    out: Path | None,
    threads: int,
    targets: str,
) -> None:
    """May the candidate model NEW replace OLD? Regressions on DATA (labeled JSONL, as for
    `eval`) and the production must-haves (or OLD's rates) on NEW. Exit 0 accept, 1 reject."""
    prompts = _read_data(data)
    old = _load_model(old_dir, threads, "OLD")
    new = _load_model(new_dir, threads, "NEW")
    texts = [p.text for p in prompts]
    report = gate(
        prompts,
        score_texts(old, texts) >= old.threshold,
        score_texts(new, texts) >= new.threshold,
        old=f"{ModelInfo.of(old)}  {old_dir}",
        new=f"{ModelInfo.of(new)}  {new_dir}",
        int8_loss=recorded_int8_loss(new.manifest),
        targets="no_worse" if targets == "no-worse" else "production",
    )
    click.echo(_gate_summary(report, data))
    _write_report(report, out)
    ctx.exit(0 if report.accepted else 1)


def _gate_summary(report: GateReport, data: Path) -> str:
    lines = [
        f"old   {report.old}",
        f"new   {report.new}",
        f"data  {data}: {report.prompts:,} prompts",
        "",
        f"regressions   {report.regressions:,} ({report.regression_rate:.2%})",
        *_examples(report.regression_examples),
        f"improvements  {report.improvements:,} ({report.improvement_rate:.2%})",
        *_examples(report.improvement_examples),
        f"unchanged     {report.unchanged:,}",
        "",
    ]
    width = max(len(rule.rule) for rule in report.rules)
    lines += [
        f"{rule.status.upper():<12}  {rule.rule:<{width}}  {rule.detail}" for rule in report.rules
    ]
    failed = sum(rule.status == "fail" for rule in report.rules)
    lines += ["", "ACCEPT" if report.accepted else f"REJECT (rules failed: {failed})"]
    return "\n".join(lines)


def _examples(changes: Sequence[VerdictChange]) -> list[str]:
    def verdict(flagged: bool) -> str:
        return "flagged" if flagged else "benign"

    return [
        f"  #{change.position} {'malicious' if change.label else 'benign'}: old "
        f"{verdict(change.old_flagged)}, new {verdict(change.new_flagged)}: {change.text!r}"
        for change in changes
    ]


@model.command("build-lite")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_lite_dir,
    show_default="the committed lite model",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=DEFAULT_SIZE, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="also write the corpus splits here as JSONL",
)
def build_lite_command(out: Path, seed: int, size: int, data_dir: Path | None) -> None:
    """Train the lite model on the generated corpus and write model.onnx + manifest.json."""
    # Imported here: training needs the `build` extra, which scoring and gating do not.
    from l2model.lite import build_lite

    manifest = build_lite(out, seed, size=size, data_dir=data_dir)
    metrics = (manifest.model_extra or {}).get("metrics", {}).get("test", {})
    click.echo(
        f"wrote {out}: {manifest.name} {manifest.version}, threshold {manifest.threshold:g}; "
        f"test split FP rate {_percent(metrics.get('fp_rate'))}, "
        f"recall {_percent(metrics.get('recall'))}"
    )


@model.command("build-fast")
@click.option(
    "--lite",
    "lite_dir",
    type=MODEL_DIR,
    default=default_lite_dir,
    show_default="the committed lite model",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_fast_dir,
    show_default="the committed fast model (the default)",
)
def build_fast_command(lite_dir: Path, out: Path) -> None:
    """Write the fast form of a lite model: its scores, in time proportional to the prompt,
    with a memory of the hand-written hard negatives (model.onnx, ngrams.npy,
    prototypes.npz, memory.jsonl, manifest.json)."""
    from l2model.corpus import generate_corpus, split_corpus
    from l2model.fast import build_fast

    split = split_corpus(generate_corpus(DEFAULT_SIZE, 0), 0)
    command = f"l2loop model build-fast --lite {lite_dir} --out {out}"
    manifest = build_fast(lite_dir, out, split, rebuild=command)
    click.echo(
        f"wrote {out}: {manifest.name} {manifest.version} from {lite_dir}, "
        f"threshold {manifest.threshold:g} (the lite model's)"
    )
