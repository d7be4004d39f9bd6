"""``l2loop model``: l2model's group (build, evaluate, gate) and the commands that move the
model every scorer runs: ``promote``, ``rollback``, ``list``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from l2loop.cli.clients import T, pass_attached, with_redis
from l2loop.release.promotion import promote_version, roll_back
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2model.cli import model
from l2model.registry import ModelPointer, RegistryError

# The root mounts l2model's group, with the commands this module adds to it.
__all__ = ["list_models", "model", "promote", "rollback"]


def _with_pointer(settings: Settings, call: Callable[[ModelPointer], Awaitable[T]]) -> T:
    return with_redis(
        settings, lambda client: call(ModelPointer(client, key_prefix=settings.topic_prefix))
    )


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@model.command()
@click.argument("target")
@click.option("--as-version", "as_version", help="register a directory under this version")
@click.option("--change", "changes", multiple=True, help="what changed (repeatable)")
@click.option(
    "--trained-through",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    help="when registering: the training data's cut-off (UTC when no offset is given)",
)
@pass_attached
def promote(
    live: Settings,
    target: str,
    as_version: str | None,
    changes: tuple[str, ...],
    trained_through: datetime | None,
) -> None:
    """Make TARGET the model every scorer runs: a registered version, or a model directory
    (registered first). Running scorers switch within seconds, between batches. The
    suppressions made before the model's training-data cut-off expire."""
    registry = model_registry(live)
    cutoff = None if trained_through is None else _as_utc(trained_through)
    try:
        if Path(target).is_dir():
            meta = registry.add(
                Path(target), version=as_version, changes=list(changes), trained_through=cutoff
            )
        elif cutoff is not None:
            raise click.UsageError("--trained-through is recorded when a directory is registered")
        else:
            meta = registry.get(target)
        promotion = with_redis(
            live,
            lambda client: promote_version(
                client,
                registry,
                meta.version,
                key_prefix=live.topic_prefix,
                backoff=live.backoff,
            ),
        )
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"current model: {promotion.current.version} ({promotion.current.path})")
    if promotion.trained_through is not None:
        click.echo(
            f"suppressions expired: {len(promotion.expired)} "
            f"(made before {promotion.trained_through.isoformat()})"
        )


@model.command()
@pass_attached
def rollback(live: Settings) -> None:
    """Point the scorers back at the model that was current before the last promotion. The
    suppressions that promotion expired apply again: the restored model never learnt them."""

    registry = model_registry(live)
    try:
        rolled = with_redis(
            live, lambda client: roll_back(client, registry, key_prefix=live.topic_prefix)
        )
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"current model: {rolled.current.version} ({rolled.current.path})")
    if rolled.left is not None and rolled.restored:
        click.echo(
            f"suppressions restored: {len(rolled.restored)} (expired by {rolled.left.version})"
        )


@model.command("list")
@pass_attached
def list_models(live: Settings) -> None:
    """The registered versions, oldest first; `*` marks the current one."""
    current = _with_pointer(live, lambda pointer: pointer.current())
    for meta in model_registry(live).versions():
        mark = "*" if current is not None and current.version == meta.version else " "
        changes = "; ".join(meta.changes) or "-"
        registered = f"{meta.registered_at:%Y-%m-%d}"
        click.echo(f"{mark} {meta.version}\t{meta.name}\t{meta.kind}\t{registered}\t{changes}")
    if current is None:
        click.echo(f"no model promoted: scorers run {live.model_dir}")
