"""``l2loop loop``: the whole loop run on labelled prompts (``simulate``, ``scenarios``,
``replay``), to see whether a cycle cuts the false positives reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from click.decorators import FC

from l2loop.settings import Settings
from l2model.private import private_dir, write_private

# What the loop commands share: the data, the share reported, the seed, the review, and
# (with a help text of each command's own) where the run goes and the quick subset.
_LOOP_DATA = click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_REPORT_SHARE = click.option(
    "--report-share",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="share of FPs (users) and misses (analysts) reported  [default: "
    "L2LOOP_REPLAY_REPORT_SHARE, 0.3]",
)
_REPLAY_SEED = click.option("--seed", type=int, default=None, help="[default: L2LOOP_REPLAY_SEED]")
_REVIEW_SHARE = click.option(
    "--review-share",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    help="each cycle a reviewer who knows the labels decides at most this share of the "
    "quarantined reports, by review group (0: nobody reviews)",
)


def _out_option(help_text: str) -> Callable[[FC], FC]:
    return click.option(
        "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help=help_text
    )


def _sample_option(help_text: str) -> Callable[[FC], FC]:
    return click.option("--sample", type=click.IntRange(min=2), default=None, help=help_text)


@click.group()
def loop() -> None:
    """The whole loop on labelled prompts: does a cycle cut the false positives reported?"""


@loop.command("simulate")
@_LOOP_DATA
@_REPORT_SHARE
@_REPLAY_SEED
@_REVIEW_SHARE
@_out_option("where the dataset, candidate and table go  [default: DATA_DIR/loop-simulation]")
@click.pass_obj
def loop_simulate(
    settings: Settings,
    data: Path,
    report_share: float | None,
    seed: int | None,
    review_share: float,
    out: Path | None,
) -> None:
    """One cycle offline on DATA (labelled JSONL): split it in halves, simulate reports of the
    current model's errors on the replayed half, train and gate a candidate as a quarterly
    cycle does, and print FP rate and recall before/after on the held-out half and the
    golden set. No topic, API or Redis is involved; nothing is registered or promoted."""
    # The offline cycle trains: it brings scikit-learn, which most commands never load.
    from l2loop.demo.loop_replay import render_simulation, simulate_cycle

    share = settings.replay_report_share if report_share is None else report_share
    chosen_seed = settings.replay_seed if seed is None else seed
    target = out or settings.data_dir / "loop-simulation"
    result = simulate_cycle(
        settings, data, target, share=share, seed=chosen_seed, review_share=review_share
    )
    click.echo(render_simulation(result, data, share, chosen_seed))
    click.echo(f"written to {target / 'simulation.md'}")


@loop.command("scenarios")
@_LOOP_DATA
@_REPORT_SHARE
@_REVIEW_SHARE
@click.option(
    "--scenario",
    "names",
    type=click.Choice(["a", "b", "c"]),
    multiple=True,
    help="a: DATA as one tenant; b: DATA's benign prompts with held-out generated attacks; "
    "c: tenant A reports, tenant B (other sources and languages) does not  [default: all]",
)
@click.option(
    "--seeds", default="0,1,2", show_default=True, help="comma-separated seeds, one run each"
)
@_sample_option("a seeded stratified subset of this many prompts of DATA per seed (a quick run)")
@_out_option(
    "where each run's dataset and candidate and scenarios.md go  [default: DATA_DIR/loop-scenarios]"
)
@click.pass_obj
def loop_scenarios(
    settings: Settings,
    data: Path,
    report_share: float | None,
    review_share: float,
    names: tuple[str, ...],
    seeds: str,
    sample: int | None,
    out: Path | None,
) -> None:
    """The loop judged on populations: each scenario on each seed, one cycle offline (as
    `loop simulate`), every tenant measured on its held-out half. Prints a table and exits
    non-zero when a run misses the bar (A's FP at least halved, nobody's FP or recall a
    point worse, the gate accepting)."""
    # The offline cycles train: they bring scikit-learn, which most commands never load.
    from l2loop.demo.scenarios import SCENARIOS, render_scenarios, run_scenarios

    try:
        chosen_seeds = [int(seed) for seed in seeds.split(",") if seed.strip()]
    except ValueError:
        raise click.BadParameter(
            f"not a list of integers: {seeds!r}", param_hint="--seeds"
        ) from None
    share = settings.replay_report_share if report_share is None else report_share
    target = out or settings.data_dir / "loop-scenarios"
    results = run_scenarios(
        settings,
        data,
        target,
        names=names or SCENARIOS,
        seeds=chosen_seeds,
        share=share,
        review_share=review_share,
        sample=sample,
    )
    table = render_scenarios(results, data, share)
    private_dir(target)
    write_private(target / "scenarios.md", table)
    click.echo(table)
    click.echo(f"written to {target / 'scenarios.md'}")
    if not all(result.success for result in results):
        raise SystemExit(1)


@loop.command("replay")
@_LOOP_DATA
@_REPORT_SHARE
@click.option(
    "--cycles", type=click.IntRange(min=1), default=1, show_default=True, help="quarterly cycles"
)
@_REPLAY_SEED
@_sample_option("replay a seeded stratified subset of this many prompts of DATA (a quick run)")
@_out_option("where the run's state and replay.md go  [default: DATA_DIR/loop-replay]")
@_REVIEW_SHARE
@click.option(
    "--review-budget",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="most review groups the reviewer decides in a cycle (its day)",
)
@click.option(
    "--hostile-share",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    help="share of the attacks flagged at or above the high-confidence bar that a hostile "
    "user reports as false positives (they must end discarded or rejected)",
)
@click.pass_obj
def loop_replay(
    settings: Settings,
    data: Path,
    report_share: float | None,
    cycles: int,
    seed: int | None,
    sample: int | None,
    out: Path | None,
    review_share: float,
    review_budget: int,
    hostile_share: float,
) -> None:
    """The whole loop on DATA (labelled JSONL) as a user would see it: its replayed half is
    sent through the real topics and worker as one tenant's traffic, simulated users report a
    share of the false positives and analysts the same share of the misses over the report
    API, a simulated reviewer decides a share of the quarantine (--review-share), and each
    cycle assembles, retrains, gates and promotes on the curated store; prints and writes FP
    rate and recall on the held-out half before and after each cycle. Uses
    embedded services unless L2LOOP_KAFKA_BROKER/L2LOOP_REDIS_URL are set; its topics, keys
    and files carry a prefix and a directory of their own."""
    # The replay trains and groups reports: it brings scikit-learn, most commands never do.
    from l2loop.replay.record import ReplayError, ReplayOptions
    from l2loop.replay.run import run_replay

    options = ReplayOptions(
        share=settings.replay_report_share if report_share is None else report_share,
        cycles=cycles,
        seed=settings.replay_seed if seed is None else seed,
        out=out or settings.data_dir / "loop-replay",
        sample=sample,
        review_share=review_share,
        review_budget=review_budget,
        hostile_share=hostile_share,
    )
    try:
        result = run_replay(settings, data, options, click.echo)
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.table)
    click.echo(f"written to {result.table_path}")
