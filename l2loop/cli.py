"""The ``l2loop`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import orjson
import redis.asyncio as aioredis
from pydantic import ValidationError

from l2loop.logs import configure, logging_config
from l2loop.schemas.windows import Alert, Rate
from l2loop.settings import Settings
from l2model.cli import model
from l2model.private import private_dir, write_private
from l2model.registry import ModelPointer, ModelRegistry, RegistryError

if TYPE_CHECKING:
    from l2loop.streams.alert_store import AlertStore

if TYPE_CHECKING:
    from l2loop.schemas.reports import QuarantinedReport, ReviewAction
    from l2loop.stores.tenants import ReporterRecord, TenantKeys, TenantRecord
    from l2loop.streams.defences.review_groups import ReviewGroup
    from l2loop.streams.reports import ReportServices

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


class StartupError(click.ClickException):
    """One line on stderr naming what is wrong, and a non-zero exit: no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def prepare_data_dir(settings: Settings) -> None:
    try:
        private_dir(settings.data_dir)
    except OSError as exc:
        raise StartupError(
            f"data directory {settings.data_dir}: cannot be created ({exc.strerror})"
        ) from None


@main.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run the Faust worker (score agent). Embedded broker/Redis when none is configured."""
    from l2loop.infra.services import await_services, serving_settings
    from l2loop.resilience import EXIT_UNAVAILABLE, DependencyUnreachable
    from l2loop.streams.app import RolesSplitError, Worker, create_app
    from l2model.runtime import ModelLoadError

    prepare_data_dir(settings)
    with serving_settings(settings) as live:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            # The app loads the model: a broken one is reported before any waiting.
            app = create_app(live)
            loop.run_until_complete(await_services(live))
        except ModelLoadError as exc:
            raise StartupError(f"model: {exc}") from None
        except RolesSplitError as exc:
            raise StartupError(str(exc)) from None
        except DependencyUnreachable as exc:
            raise StartupError(str(exc), EXIT_UNAVAILABLE) from None
        Worker(app, live).execute_from_commandline()


@main.command()
@click.option("--rate", default=200.0, show_default=True, help="demo events per second")
@click.option("--duration", default=0.0, show_default=True, help="seconds to run; 0 = until Ctrl-C")
@click.option(
    "--window",
    "window_s",
    type=click.IntRange(min=60),
    default=60,
    show_default=True,
    help="window length in seconds (production: 3600)",
)
@click.option(
    "--spike-at",
    type=click.FloatRange(min=0),
    default=None,
    help="seconds after start: promote an over-sensitive model (an FP spike)",
)
@click.option(
    "--spike-for",
    type=click.FloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="seconds the spike lasts before the rollback",
)
@click.option(
    "--cycle-at",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="seconds after start: run the quarterly cycle now on what users reported "
    "(assemble, retrain, gate, promote); 0: none",
)
@click.pass_obj
def up(
    settings: Settings,
    rate: float,
    duration: float,
    window_s: int,
    spike_at: float | None,
    spike_for: float,
    cycle_at: float,
) -> None:
    """Embedded broker + Redis, worker, API, quarterly scheduler, demo traffic, canaries and
    reporting users, an optional FP spike, one quarterly cycle on the users' reports, and a
    live summary: FP rate, recall, alerts, reports, suppressions."""
    from l2loop.demo.traffic import demo_prompts
    from l2loop.up import Spike, run_up

    configure("warn")
    spike = Spike(at_s=spike_at, for_s=spike_for) if spike_at is not None else None
    run_up(
        settings,
        demo_prompts(),
        rate=rate,
        duration_s=duration,
        window_s=window_s,
        spike=spike,
        cycle_at_s=cycle_at or None,
    )


@main.command()
@click.option(
    "--per-min",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="probes per minute  [default: L2LOOP_CANARY_PROBES_PER_MIN]",
)
@click.option("--duration", default=0.0, show_default=True, help="seconds to run; 0 = until Ctrl-C")
@click.pass_obj
def canary(settings: Settings, per_min: float | None, duration: float) -> None:
    """Send golden-set canary probes to scan-events (the configured broker, or a running
    `l2loop up`), labelled with their ground truth, until Ctrl-C."""
    import signal

    from l2loop.infra.services import attached_settings
    from l2loop.workers.canary import run_canary

    live = attached_settings(settings)
    if per_min is not None:
        live = live.model_copy(update={"canary_probes_per_min": per_min})

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if duration > 0:
            loop.call_later(duration, stop.set)
        return await run_canary(live, stop)

    sent = asyncio.run(run())
    click.echo(f"sent {sent} canary probes to {live.topic('scan-events')}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default="scan-events", show_default=True, help="topic, without prefix")
@click.pass_obj
def produce(settings: Settings, file: Path, topic: str) -> None:
    """Send every line of FILE (JSONL) as one record, unchanged."""
    from l2loop.infra.clients import produce_lines
    from l2loop.infra.services import attached_settings

    live = attached_settings(settings)
    lines = [line for line in file.read_bytes().splitlines() if line.strip()]
    sent = asyncio.run(produce_lines(live, live.topic(topic), lines))
    click.echo(f"sent {sent} records to {live.topic(topic)}")


@main.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="start at the oldest record")
@click.option("--idle-exit", type=float, default=None, help="exit after this many quiet seconds")
@click.pass_obj
def tail(settings: Settings, topic: str, from_beginning: bool, idle_exit: float | None) -> None:
    """Print the decoded records of TOPIC (name without prefix), one JSON object a line."""
    from l2loop.infra.clients import decode_value, tail_records
    from l2loop.infra.services import attached_settings

    live = attached_settings(settings)

    async def run() -> None:
        name = topic if topic.startswith(live.topic_prefix) else live.topic(topic)
        async for record in tail_records(
            live, name, from_beginning=from_beginning, idle_timeout_s=idle_exit
        ):
            line = {
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key.decode("utf-8", "backslashreplace") if record.key else None,
                "value": decode_value(record.value),
            }
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@main.group()
def schemas() -> None:
    """The wire schemas."""


@schemas.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write one JSON Schema file per record type into DIRECTORY."""
    from l2loop.schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))


@main.command()
@click.pass_obj
def topics(settings: Settings) -> None:
    """Create the missing topics on the configured broker and list all of the loop's."""
    from l2loop.infra.services import attached_settings
    from l2loop.infra.topics import TOPICS, ensure_topics

    live = attached_settings(settings)
    created = set(asyncio.run(ensure_topics(live)))
    for spec in TOPICS:
        name = live.topic(spec.name)
        state = "created" if name in created else "exists"
        click.echo(f"{name}\t{spec.partitions or live.partitions}\t{state}")


@main.command()
@click.option("--host", default=None, help="listen address (default: settings.api_host)")
@click.option("--port", type=int, default=None, help="listen port (default: settings.api_port)")
@click.pass_obj
def api(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the HTTP API and the dashboard page (windows, alerts, /metrics, /openapi.json)."""
    import uvicorn

    from l2loop.api.app import create_api
    from l2loop.infra.services import attached_settings

    live = attached_settings(settings)
    uvicorn.run(
        create_api(live),
        host=host or live.api_host,
        port=live.api_port if port is None else port,
        log_config=logging_config(live.log_level),
        log_level=live.log_level.replace("warn", "warning").replace("crit", "critical"),
    )


def _alert_store_call(settings: Settings, call: Callable[[AlertStore], Awaitable[T]]) -> T:
    from l2loop.stores.verdicts import connect
    from l2loop.streams.alert_store import AlertStore

    async def run() -> T:
        client = connect(settings.redis_dsn)
        try:
            return await call(AlertStore(client, key_prefix=settings.topic_prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _percent(rate: Rate) -> str:
    return "-" if rate.value is None else f"{100 * rate.value:.2f}% ({rate.hits}/{rate.total})"


@main.command()
@click.option("--hours", default=48, show_default=True, help="hours up to the newest window")
@click.pass_obj
def windows(settings: Settings, hours: int) -> None:
    """Print the windows of the last HOURS hours as a table, oldest first."""
    from l2loop.infra.services import attached_settings

    live = attached_settings(settings)
    found = _alert_store_call(live, lambda store: store.recent_windows(hours))
    header = (
        "window",
        "model",
        "rev",
        "events",
        "flag rate",
        "canary FP",
        "reported FP",
        "recall",
        "p95 ms",
    )
    rows = [
        (
            f"{w.window_start:%Y-%m-%d %H:%M}",
            w.model_version,
            str(w.revision),
            str(w.events),
            _percent(w.flag_rate),
            _percent(w.canary_fp_rate),
            _percent(w.reported_fp_rate),
            _percent(w.recall),
            "-" if w.model_latency_ms.p95 is None else f"{w.model_latency_ms.p95:.2f}",
        )
        for w in found
    ]
    _echo_table(header, rows)
    if not rows:
        click.echo("no windows yet")


@main.command()
@click.option("--limit", default=20, show_default=True, help="recent state changes to show")
@click.pass_obj
def alerts(settings: Settings, limit: int) -> None:
    """Print the open alerts, then the latest state changes."""
    from l2loop.infra.services import attached_settings

    live = attached_settings(settings)

    async def read(store: AlertStore) -> tuple[list[Alert], list[Alert]]:
        return list((await store.open_alerts()).values()), await store.history(limit)

    open_alerts, recent = _alert_store_call(live, read)
    header = ("status", "rule", "window", "model", "value", "threshold", "samples", "changed")
    for title, shown in (("open", open_alerts), ("recent", recent)):
        click.echo(f"{title}: {len(shown)}")
        _echo_table(
            header,
            [
                (
                    a.status,
                    a.rule,
                    f"{a.window_start:%Y-%m-%d %H:%M}",
                    a.model_version,
                    f"{a.value:.4g}",
                    f"{a.threshold:.4g}",
                    str(a.samples),
                    f"{a.changed_at:%Y-%m-%d %H:%M:%S}",
                )
                for a in shown
            ],
        )


def _echo_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        return
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


main.add_command(model)


def _redis_call(settings: Settings, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    from l2loop.stores.verdicts import connect

    async def run() -> T:
        client = connect(settings.redis_dsn)
        try:
            return await call(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _pointer_call(settings: Settings, call: Callable[[ModelPointer], Awaitable[T]]) -> T:
    return _redis_call(
        settings, lambda client: call(ModelPointer(client, key_prefix=settings.topic_prefix))
    )


@model.command()
@click.argument("target")
@click.option("--as-version", "as_version", help="register a directory under this version")
@click.option("--change", "changes", multiple=True, help="what changed (repeatable)")
@click.option(
    "--trained-through",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    help="when registering: the training data's cut-off (UTC when no offset is given)",
)
@click.pass_obj
def promote(
    settings: Settings,
    target: str,
    as_version: str | None,
    changes: tuple[str, ...],
    trained_through: datetime | None,
) -> None:
    """Make TARGET the model every scorer runs: a registered version, or a model directory
    (registered first). Running scorers switch within seconds, between batches. The
    suppressions made before the model's training-data cut-off expire."""
    from l2loop.infra.services import attached_settings
    from l2loop.workers.promotion import promote_version

    live = attached_settings(settings)
    registry = ModelRegistry(live.registry_root)
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
        promotion = _redis_call(
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


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@model.command()
@click.pass_obj
def rollback(settings: Settings) -> None:
    """Point the scorers back at the model that was current before the last promotion. The
    suppressions that promotion expired apply again: the restored model never learnt them."""
    from l2loop.infra.services import attached_settings
    from l2loop.stores.suppressions import SuppressionStore

    live = attached_settings(settings)
    registry = ModelRegistry(live.registry_root)
    try:
        left = _pointer_call(live, lambda pointer: pointer.current())
        current = _pointer_call(live, lambda pointer: pointer.rollback())
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"current model: {current.version} ({current.path})")
    if left is None:
        return
    try:
        through = registry.get(current.version).trained_through
    except RegistryError:
        through = None
    restored = _redis_call(
        live,
        lambda client: SuppressionStore(client, key_prefix=live.topic_prefix).restore_expired_by(
            left.version, trained_through=through
        ),
    )
    if restored:
        click.echo(f"suppressions restored: {len(restored)} (expired by {left.version})")


@model.command("list")
@click.pass_obj
def list_models(settings: Settings) -> None:
    """The registered versions, oldest first; `*` marks the current one."""
    from l2loop.infra.services import attached_settings

    live = attached_settings(settings)
    current = _pointer_call(live, lambda pointer: pointer.current())
    for meta in ModelRegistry(live.registry_root).versions():
        mark = "*" if current is not None and current.version == meta.version else " "
        changes = "; ".join(meta.changes) or "-"
        registered = f"{meta.registered_at:%Y-%m-%d}"
        click.echo(f"{mark} {meta.version}\t{meta.name}\t{meta.kind}\t{registered}\t{changes}")
    if current is None:
        click.echo(f"no model promoted: scorers run {live.model_dir}")


@main.group()
def suppressions() -> None:
    """Confirmed false positives allowed per tenant until a model trained on them is promoted."""


@suppressions.command("list")
@click.option("--tenant", help="only this tenant's")
@click.option("--ended", is_flag=True, help="the revoked and expired ones instead")
@click.pass_obj
def suppressions_list(settings: Settings, tenant: str | None, ended: bool) -> None:
    """One line each: tenant, text key, when it was made, reporters, source, text preview."""
    from l2loop.infra.services import attached_settings
    from l2loop.schemas.suppressions import EndedSuppression, Suppression
    from l2loop.stores.suppressions import SuppressionStore

    live = attached_settings(settings)

    async def read(client: aioredis.Redis) -> list[Suppression] | list[EndedSuppression]:
        store = SuppressionStore(client, key_prefix=live.topic_prefix)
        return await (store.ended(tenant) if ended else store.active(tenant))

    for item in _redis_call(live, read):
        if isinstance(item, EndedSuppression):
            made, why = item.suppression, f"\t{item.ended} {item.ended_at:%Y-%m-%dT%H:%M:%SZ}"
            why += f" by {item.by}: {item.reason}"
        else:
            made, why = item, ""
        click.echo(
            f"{made.tenant_id}\t{made.text_key}\t{made.created_at:%Y-%m-%dT%H:%M:%SZ}\t"
            f"{made.reporter_count}\t{made.source}\t{made.preview[:60]!r}{why}"
        )


@suppressions.command("revoke")
@click.argument("tenant")
@click.argument("text_key")
@click.option("--reason", required=True, help="why, kept with the revocation")
@click.option("--by", "by", default="operator", show_default=True, help="who revokes it")
@click.pass_obj
def suppressions_revoke(
    settings: Settings, tenant: str, text_key: str, reason: str, by: str
) -> None:
    """End TENANT's suppression of TEXT_KEY now; a later quorum does not bring it back (a
    later release in review does)."""
    from l2loop.infra.services import attached_settings
    from l2loop.stores.suppressions import SuppressionStore

    live = attached_settings(settings)
    revoked = _redis_call(
        live,
        lambda client: SuppressionStore(client, key_prefix=live.topic_prefix).revoke(
            tenant, text_key, by=by, reason=reason
        ),
    )
    if revoked is None:
        raise click.ClickException(f"{tenant} has no active suppression of {text_key}")
    click.echo(f"revoked: {tenant}\t{text_key}")


def _with_reports(settings: Settings, call: Callable[[ReportServices], Awaitable[T]]) -> T:
    from l2loop.streams.reports import report_services

    async def run() -> T:
        services = report_services(settings)
        try:
            return await call(services)
        finally:
            await services.close()

    return asyncio.run(run())


@main.group()
def tenants() -> None:
    """Tenants and their report API keys (only hashes are stored)."""


def _tenant_call(settings: Settings, call: Callable[[TenantKeys], Awaitable[T]]) -> T:
    from l2loop.infra.services import attached_settings
    from l2loop.stores.tenants import TenantError

    try:
        return _with_reports(attached_settings(settings), lambda s: call(s.tenants))
    except TenantError as exc:
        raise click.ClickException(str(exc)) from exc


@tenants.command("add")
@click.argument("tenant_id")
@click.pass_obj
def tenants_add(settings: Settings, tenant_id: str) -> None:
    """Register TENANT_ID and print its key: shown once, never stored."""
    click.echo(_tenant_call(settings, lambda keys: keys.add(tenant_id)))


@tenants.command("rotate")
@click.argument("tenant_id")
@click.pass_obj
def tenants_rotate(settings: Settings, tenant_id: str) -> None:
    """Print a new key for TENANT_ID; the old one stops working at once."""
    click.echo(_tenant_call(settings, lambda keys: keys.rotate(tenant_id)))


@tenants.command("revoke")
@click.argument("tenant_id")
@click.pass_obj
def tenants_revoke(settings: Settings, tenant_id: str) -> None:
    """Revoke TENANT_ID's key: its HTTP and Kafka reports are refused until `rotate`."""
    record = _tenant_call(settings, lambda keys: keys.revoke(tenant_id))
    click.echo(f"revoked {record.tenant_id}")


@tenants.command("add-reporter")
@click.argument("tenant_id")
@click.argument("reporter_id")
@click.pass_obj
def tenants_add_reporter(settings: Settings, tenant_id: str, reporter_id: str) -> None:
    """Print a key of REPORTER_ID of TENANT_ID, shown once: its reports count as a voice of
    their own (a tenant key is one voice whatever reporter ids it sends). Again for the same
    reporter: a new key, and the old one stops working at once."""
    click.echo(_tenant_call(settings, lambda keys: keys.issue_reporter(tenant_id, reporter_id)))


@tenants.command("revoke-reporter")
@click.argument("tenant_id")
@click.argument("reporter_id")
@click.pass_obj
def tenants_revoke_reporter(settings: Settings, tenant_id: str, reporter_id: str) -> None:
    """Revoke the key of REPORTER_ID of TENANT_ID."""
    record = _tenant_call(settings, lambda keys: keys.revoke_reporter(tenant_id, reporter_id))
    click.echo(f"revoked {record.tenant_id}/{record.reporter_id}")


@tenants.command("list")
@click.pass_obj
def tenants_list(settings: Settings) -> None:
    """Every tenant (id, state, created, key issued), then every reporter key
    (tenant/reporter, state, key issued)."""

    async def both(keys: TenantKeys) -> tuple[list[TenantRecord], list[ReporterRecord]]:
        return await keys.list(), await keys.reporters()

    tenants_, reporters = _tenant_call(settings, both)
    for record in tenants_:
        state = "active" if record.active else "revoked"
        click.echo(
            f"{record.tenant_id}\t{state}\t{record.created_at:%Y-%m-%d %H:%M}\t"
            f"{record.key_issued_at:%Y-%m-%d %H:%M}"
        )
    for reporter in reporters:
        state = "active" if reporter.active else "revoked"
        click.echo(
            f"{reporter.tenant_id}/{reporter.reporter_id}\t{state}\t"
            f"{reporter.key_issued_at:%Y-%m-%d %H:%M}"
        )


@main.group()
def review() -> None:
    """Quarantined reports in review groups (the same text, or texts a few words apart, under
    one kind of claim and one quarantine reason): list them, release them into training, or
    discard them, a whole group at once or one report."""


def _member_line(item: QuarantinedReport) -> dict[str, object]:
    return {
        "report_id": item.report.report_id,
        "reason": item.reason,
        "detail": item.detail,
        "tenant_id": item.report.tenant_id,
        "reporter_id": item.report.reporter_id,
        "kind": item.report.kind,
        "model_score": item.verdict.score if item.verdict is not None else None,
        "text": item.text,
    }


def _group_line(group: ReviewGroup, verbose: bool) -> dict[str, object]:
    scores = group.score_range()
    line: dict[str, object] = {
        "group_id": group.group_id,
        "size": group.size,
        "kind": group.kind,
        "reason": group.reason,
        "tenants": group.tenants(),
        "score_min": scores[0] if scores is not None else None,
        "score_max": scores[1] if scores is not None else None,
        "leader": group.leader.report.report_id,
        "leader_tenant": group.leader.report.tenant_id,
        "preview": group.preview(),
    }
    if verbose:
        line["members"] = [_member_line(item) for item in group.members]
    return line


@review.command("list")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="each member too: report id, tenant, reporter, score, detail and full text",
)
@click.pass_obj
def review_list(settings: Settings, verbose: bool) -> None:
    """Pending review groups, largest first, one JSON object a line: id, size, kind,
    quarantine reason, reports per tenant, model score range, the leader and a preview of
    its text (every member's text is close to it)."""
    from l2loop.infra.services import attached_settings
    from l2loop.streams.defences.review_groups import group_reports

    live = attached_settings(settings)
    held = _with_reports(live, lambda s: s.queue.pending())
    for group in group_reports(held, similarity=live.review_group_similarity):
        sys.stdout.buffer.write(orjson.dumps(_group_line(group, verbose)) + b"\n")


@review.command("log")
@click.pass_obj
def review_log(settings: Settings) -> None:
    """Every review decision so far (who, when, why, with which group), oldest first, as JSON
    lines."""
    from l2loop.infra.services import attached_settings

    for decision in _with_reports(attached_settings(settings), lambda s: s.queue.decisions()):
        sys.stdout.buffer.write(orjson.dumps(decision.model_dump(mode="json")) + b"\n")


def _decide(
    settings: Settings,
    report_id: str | None,
    group: str | None,
    tenant: str | None,
    action: ReviewAction,
    reviewer: str,
    why: str,
) -> list[str]:
    """Decides one report, or every member of a group (each decision audited on its own,
    naming the group); a line for each."""
    from l2loop.infra.clients import publisher
    from l2loop.infra.services import attached_settings
    from l2loop.streams.defences.review_groups import find_group, group_reports
    from l2loop.streams.reports import Reviewer, ReviewError

    if (report_id is None) == (group is None):
        raise click.UsageError("name a REPORT_ID or a --group, one of them")
    if group is not None and tenant is not None:
        raise click.UsageError("--tenant goes with a REPORT_ID; a group names its members")
    live = attached_settings(settings)

    async def decide(services: ReportServices) -> list[str]:
        if report_id is not None:
            members = [await services.queue.find(report_id, tenant)]
        else:
            groups = group_reports(
                await services.queue.pending(), similarity=live.review_group_similarity
            )
            found = find_group(groups, str(group))
            if found is None:
                raise ReviewError(
                    f"no pending group {group!r}: its reports were decided, or it gained or "
                    "lost one since it was listed; list again"
                )
            members = list(found.members)
        async with publisher(live) as publish:
            reviewer_ = Reviewer.of(services, publish, live)
            decisions = [
                await reviewer_.decide(item, action, reviewer, why, group_id=group)
                for item in members
            ]
        return [
            f"released {d.report_id} of {d.tenant_id}: example {d.example_id} curated"
            if d.action == "release"
            else f"discarded {d.report_id} of {d.tenant_id}"
            for d in decisions
        ]

    try:
        return _with_reports(live, decide)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc


_REPORT_ID = click.argument("report_id", required=False)
_GROUP = click.option(
    "--group", default=None, help="a group id from `review list`: decide every report in it"
)
_REVIEWER = click.option("--reviewer", required=True, help="who decides (kept in the audit log)")
_WHY = click.option("--why", required=True, help="why (kept in the audit log)")
_TENANT = click.option(
    "--tenant", default=None, help="the reporting tenant, when several hold REPORT_ID"
)


@review.command("release")
@_REPORT_ID
@_GROUP
@_TENANT
@_REVIEWER
@_WHY
@click.pass_obj
def review_release(
    settings: Settings,
    report_id: str | None,
    group: str | None,
    tenant: str | None,
    reviewer: str,
    why: str,
) -> None:
    """Release REPORT_ID, or every report of a --group, into curated-examples, marked
    released-in-review."""
    for line in _decide(settings, report_id, group, tenant, "release", reviewer, why):
        click.echo(line)


@review.command("discard")
@_REPORT_ID
@_GROUP
@_TENANT
@_REVIEWER
@_WHY
@click.pass_obj
def review_discard(
    settings: Settings,
    report_id: str | None,
    group: str | None,
    tenant: str | None,
    reviewer: str,
    why: str,
) -> None:
    """Discard REPORT_ID, or every report of a --group: it teaches nothing."""
    for line in _decide(settings, report_id, group, tenant, "discard", reviewer, why):
        click.echo(line)


@main.group()
def loop() -> None:
    """The whole loop on labelled prompts: does a cycle cut the false positives reported?"""


# What `loop simulate` and `loop replay` share: the data, the share reported, the seed.
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


@loop.command("simulate")
@_LOOP_DATA
@_REPORT_SHARE
@_REPLAY_SEED
@_REVIEW_SHARE
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the dataset, candidate and table go  [default: DATA_DIR/loop-simulation]",
)
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
@click.option(
    "--sample",
    type=click.IntRange(min=2),
    default=None,
    help="a seeded stratified subset of this many prompts of DATA per seed (a quick run)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where each run's dataset and candidate and scenarios.md go  "
    "[default: DATA_DIR/loop-scenarios]",
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
@click.option(
    "--sample",
    type=click.IntRange(min=2),
    default=None,
    help="replay a seeded stratified subset of this many prompts of DATA (a quick run)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the run's state and replay.md go  [default: DATA_DIR/loop-replay]",
)
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
    from l2loop.replay import ReplayError, ReplayOptions, run_replay

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


@main.command()
@click.pass_obj
def scheduler(settings: Settings) -> None:
    """Run the quarterly cycle on its cron (L2LOOP_SCHEDULER_CRON, UTC) until Ctrl-C. The job
    is kept in Redis; however many schedulers run, each quarter's cycle runs once."""
    import signal
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler

    from l2loop.infra.services import attached_settings
    from l2loop.workers.scheduler import JOB_ID, configure_scheduler, start_scheduler

    live = attached_settings(settings)
    running = configure_scheduler(BackgroundScheduler(), live)
    start_scheduler(running, live)
    click.echo(f"next quarterly cycle: {running.get_job(JOB_ID).next_run_time}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    running.shutdown(wait=False)


@main.group()
def dataset() -> None:
    """Retraining datasets from the curated store."""


@dataset.command("assemble")
@click.option("--quarter", help="a quarter like 2026Q3  [default: the last one that ended]")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="first day (UTC)")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), help="day after the last")
@click.option("--retrain", is_flag=True, help="then train, gate and (on accept) promote")
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
    from l2loop.infra.services import attached_settings
    from l2loop.workers.assembler import Period
    from l2loop.workers.scheduler import due_period, now_utc, run_exclusively

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
            period = due_period(now_utc())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    live = attached_settings(settings)
    record = asyncio.run(run_exclusively(live, period, retrain=retrain, once=False))
    if record is None:
        raise click.ClickException(f"a cycle of {period.name} is running elsewhere")
    click.echo(record.model_dump_json(indent=2))
