"""``l2loop dataset``: assemble a retraining dataset now (and retrain on it)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import click

from l2loop.infra.services import attached_settings
from l2loop.schemas.common import utc_now
from l2loop.settings import Settings
from l2loop.workers.assembly.period import Period
from l2loop.workers.scheduler import due_period, run_exclusively

_DAY = click.DateTime(formats=["%Y-%m-%d"])


@click.group()
def dataset() -> None:
    """Retraining datasets from the curated store."""


@dataset.command("assemble")
@click.option("--quarter", help="a quarter like 2026Q3  [default: the last one that ended]")
@click.option("--since", type=_DAY, help="first day (UTC)")
@click.option("--until", type=_DAY, help="day after the last")
@click.option(
    "--retrain",
    is_flag=True,
    help="then train, gate and (on accept) release: a staged rollout, or promoted at once "
    "with L2LOOP_PROMOTION=immediate",
)
@click.pass_obj
def dataset_assemble(
    settings: Settings,
    quarter: str | None,
    since: datetime | None,
    until: datetime | None,
    retrain: bool,
) -> None:
    """Assemble the dataset of a quarter or a date range now (and with --retrain close the
    loop on it). Waits for no one but a cycle of the same period running elsewhere."""
    if quarter is not None and (since or until):
        raise click.UsageError("give --quarter or --since/--until, not both")
    if (since is None) != (until is None):
        raise click.UsageError("--since and --until go together")
    try:
        if since is not None and until is not None:
            period = Period.between(since.date(), until.date())
        elif quarter is not None:
            period = Period.quarter(quarter)
        else:
            period = due_period(utc_now())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    # Attached only now: a usage error is reported as such even with no services around.
    live = attached_settings(settings)
    record = asyncio.run(run_exclusively(live, period, retrain=retrain, once=False))
    if record is None:
        raise click.ClickException(f"a cycle of {period.name} is running elsewhere")
    click.echo(record.model_dump_json(indent=2))
