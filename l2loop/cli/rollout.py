"""``l2loop rollout``: start a staged rollout of a registered model, watch it, steer it.

The commands write the one rollout record the score workers apply and decide on
(l2loop.release.rollout); ``status`` reads it back, with the latest comparison the workers
recorded."""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable

import click

from l2loop.cli.clients import T, pass_attached, with_redis
from l2loop.cli.tables import echo_table
from l2loop.release.analysis import RolloutPolicy, waiting_for
from l2loop.release.rollout import RolloutError, Rollouts
from l2loop.schemas.common import utc_now
from l2loop.schemas.rollout import ArmFigures, Comparison, HashBy, Rollout, parse_stages
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2model.registry import RegistryError


def _with_rollouts(settings: Settings, call: Callable[[Rollouts], Awaitable[T]]) -> T:
    """Runs ``call`` on the rollout commands; a refused command is a one-line error."""
    registry = model_registry(settings)
    try:
        return with_redis(settings, lambda client: call(Rollouts(client, settings, registry)))
    except (RolloutError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from None


def _stages_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else ",".join(parse_stages(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _standing(rollout: Rollout) -> str:
    """Where the run stands, and which model serves."""
    where = f"stage {rollout.stage} ({rollout.stage_index + 1} of {len(rollout.stages)})"
    if rollout.status == "completed":
        return f"completed; {rollout.candidate.version} is the model in service"
    if not rollout.active:
        return (
            f"{rollout.status} at {where}: {rollout.reason}; "
            f"{rollout.incumbent.version} serves every event"
        )
    line = f"{rollout.status} at {where}"
    if rollout.promoted:
        line += f"; {rollout.candidate.version} is the model in service"
    return line


def _summary(rollout: Rollout) -> str:
    return f"{rollout.run_id}: {_standing(rollout)}"


def _rate(hits: int, total: int) -> str:
    return "-" if total == 0 else f"{100 * hits / total:.2f}% ({hits}/{total})"


def _arm(role: str, arm: ArmFigures) -> tuple[str, ...]:
    return (
        role,
        arm.version,
        str(arm.events),
        str(arm.flagged),
        _rate(arm.canary_fp, arm.canary_benign),
        _rate(arm.canary_tp, arm.canary_malicious),
        "-" if arm.latency_p95_ms is None else f"{arm.latency_p95_ms:.3f}",
        str(arm.failed),
    )


def _echo_comparison(comparison: Comparison, waits: list[str] | None) -> None:
    """The comparison's arms and checks; ``waits`` for a run still active, else None."""
    click.echo(
        f"comparison at {comparison.at:%Y-%m-%d %H:%M:%S} (stage {comparison.stage}, held "
        f"{comparison.held_s:.0f} s): ready {'yes' if comparison.ready else 'no'}, "
        f"flips {comparison.flips_up} up / {comparison.flips_down} down"
    )
    header = ("arm", "model", "events", "flagged", "canary FP", "recall", "p95 ms", "failed")
    echo_table(
        header, [_arm("candidate", comparison.candidate), _arm("incumbent", comparison.incumbent)]
    )
    echo_table(
        ("check", "outcome", "detail"),
        [(check.name, check.outcome, check.detail) for check in comparison.checks],
    )
    if waits is None:
        return
    click.echo("waiting for:" if waits else "waiting for: nothing, the stage may advance")
    for wait in waits:
        click.echo(f"  {wait}")


def _echo_status(rollout: Rollout, policy: RolloutPolicy) -> None:
    click.echo(
        f"run {rollout.run_id}: candidate {rollout.candidate.version}, incumbent "
        f"{rollout.incumbent.version}, hash by {rollout.hash_by}"
    )
    marked = [f"[{s}]" if i == rollout.stage_index else s for i, s in enumerate(rollout.stages)]
    click.echo(f"stages: {' > '.join(marked)}")
    click.echo(f"status: {_standing(rollout)}")
    if rollout.active:
        held = (utc_now() - rollout.stage_started_at).total_seconds()
        click.echo(f"held: {held:.0f} s at stage {rollout.stage}")
    if rollout.candidate_share is not None:
        click.echo(f"candidate share of acting verdicts: {100 * rollout.candidate_share:.2f}%")
    if rollout.last is None:
        click.echo("comparison: none yet at this stage")
    else:
        waits = waiting_for(rollout.last, policy) if rollout.active else None
        _echo_comparison(rollout.last, waits)
    click.echo(f"history: {len(rollout.history)} decision(s)")
    echo_table(
        ("stage", "started", "ended", "outcome", "by"),
        [
            (
                record.stage,
                f"{record.started_at:%Y-%m-%d %H:%M:%S}",
                f"{record.ended_at:%Y-%m-%d %H:%M:%S}",
                record.outcome,
                record.by,
            )
            for record in rollout.history
        ],
    )


@click.group()
def rollout() -> None:
    """Serve a registered model to a growing share of events beside the model in service,
    compared at every stage; the score workers advance it, or roll it back when it does
    worse."""


@rollout.command()
@click.argument("version")
@click.option(
    "--stages",
    callback=_stages_option,
    help="shadow, then rising percentages ending at 100, e.g. shadow,10,50,100 "
    "[default: L2LOOP_ROLLOUT_STAGES]",
)
@click.option(
    "--hash-by",
    "hash_by",
    type=click.Choice(typing.get_args(HashBy)),
    help="what the split keeps together: a tenant's events, or each event on its own "
    "[default: L2LOOP_ROLLOUT_HASH_BY]",
)
@pass_attached
def start(live: Settings, version: str, stages: str | None, hash_by: HashBy | None) -> None:
    """Start a rollout of the registered VERSION against the model in service."""
    started = _with_rollouts(
        live, lambda rollouts: rollouts.start(version, stages=stages, hash_by=hash_by)
    )
    click.echo(f"run: {started.run_id}")
    click.echo(f"candidate: {started.candidate.version}")
    click.echo(f"incumbent: {started.incumbent.version}")
    click.echo(f"stages: {' > '.join(started.stages)} (hash by {started.hash_by})")


@rollout.command()
@click.option("--json", "as_json", is_flag=True, help="the rollout record as JSON (null if none)")
@pass_attached
def status(live: Settings, as_json: bool) -> None:
    """The latest run: its stage, the latest comparison, what it waits for, its decisions."""
    found = _with_rollouts(live, lambda rollouts: rollouts.status())
    if as_json:
        click.echo("null" if found is None else found.model_dump_json(indent=2))
    elif found is None:
        click.echo("no rollout has been started")
    else:
        _echo_status(found, RolloutPolicy.from_settings(live))


@rollout.command()
@pass_attached
def advance(live: Settings) -> None:
    """Move the rollout to its next stage now; at 100 the candidate is the model in service,
    after 100 the run completes."""
    click.echo(_summary(_with_rollouts(live, lambda rollouts: rollouts.advance())))


@rollout.command()
@pass_attached
def pause(live: Settings) -> None:
    """Hold the stage: no automatic advance (a failed check still rolls it back)."""
    click.echo(_summary(_with_rollouts(live, lambda rollouts: rollouts.pause())))


@rollout.command()
@pass_attached
def resume(live: Settings) -> None:
    """Let a paused rollout advance again."""
    click.echo(_summary(_with_rollouts(live, lambda rollouts: rollouts.resume())))


@rollout.command()
@click.option("--reason", help="why, kept with the run")
@pass_attached
def abort(live: Settings, reason: str | None) -> None:
    """End the rollout: the incumbent serves every event again."""
    ended = _with_rollouts(
        live, lambda rollouts: rollouts.abort() if reason is None else rollouts.abort(reason)
    )
    click.echo(_summary(ended))
