"""The ``l2loop`` command line: the root group, with each group of commands in a module of
its own."""

from __future__ import annotations

import os

import click
from pydantic import ValidationError

from l2loop.cli import (
    dataset,
    loop,
    model,
    monitoring,
    records,
    review,
    rollout,
    services,
    suppressions,
    tenants,
)
from l2loop.logs import configure
from l2loop.settings import Settings


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    commands=[
        services.worker,
        services.up,
        services.canary,
        services.api,
        services.scheduler,
        records.topics,
        records.produce,
        records.tail,
        records.schemas,
        monitoring.windows,
        monitoring.alerts,
        model.model,
        rollout.rollout,
        suppressions.suppressions,
        tenants.tenants,
        review.review,
        loop.loop,
        dataset.dataset,
    ],
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """l2loop: score prompts in real time, watch FP rate, learn from reports, retrain."""
    # Owner-only for what libraries create too (Faust's data, temporary files, the children
    # `up` starts); l2loop's own files get their modes explicitly (decision 0017).
    os.umask(0o077)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"L2LOOP_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise click.ClickException(f"configuration: {problems}") from None
    configure(settings.log_level)
    ctx.obj = settings
