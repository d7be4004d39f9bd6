"""The ``l2loop`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import orjson

from l2loop.logs import configure, logging_config
from l2loop.settings import Settings
from l2model.cli import model
from l2model.registry import ModelPointer, ModelRegistry, RegistryError

if TYPE_CHECKING:
    from streams.reports import ReportServices
    from streams.tenants import TenantKeys

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """l2loop: score prompts in real time, watch FP rate, learn from reports, retrain."""
    settings = Settings()
    configure(settings.log_level)
    ctx.obj = settings


@main.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run the Faust worker (score agent). Embedded broker/Redis when none is configured."""
    import faust

    from l2loop.services import serving_settings
    from streams.app import create_app
    from streams.topics import ensure_topics

    with serving_settings(settings) as live:
        asyncio.run(ensure_topics(live))
        # asyncio.run closed its loop; the worker needs a current one of its own.
        asyncio.set_event_loop(asyncio.new_event_loop())
        app = create_app(live)
        faust_worker = faust.Worker(
            app,
            loglevel=live.log_level,
            logging_config=logging_config(live.log_level),
        )
        faust_worker.execute_from_commandline()


@main.command()
@click.option("--rate", default=200.0, show_default=True, help="demo events per second")
@click.option("--duration", default=0.0, show_default=True, help="seconds to run; 0 = until Ctrl-C")
@click.pass_obj
def up(settings: Settings, rate: float, duration: float) -> None:
    """Embedded broker + Redis, a scoring worker, demo traffic and a live one-line summary."""
    from l2loop.up import run_up
    from workers.demo_traffic import demo_prompts

    configure("warn")
    run_up(settings, demo_prompts(), rate=rate, duration_s=duration)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default="scan-events", show_default=True, help="topic, without prefix")
@click.pass_obj
def produce(settings: Settings, file: Path, topic: str) -> None:
    """Send every line of FILE (JSONL) as one record, unchanged."""
    from l2loop.clients import produce_lines
    from l2loop.services import attached_settings

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
    from l2loop.clients import decode_value, tail_records
    from l2loop.services import attached_settings

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
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))


@main.command()
@click.pass_obj
def topics(settings: Settings) -> None:
    """Create the missing topics on the configured broker and list all of the loop's."""
    from l2loop.services import attached_settings
    from streams.topics import TOPICS, ensure_topics

    live = attached_settings(settings)
    created = set(asyncio.run(ensure_topics(live)))
    for spec in TOPICS:
        name = live.topic(spec.name)
        state = "created" if name in created else "exists"
        click.echo(f"{name}\t{spec.partitions or live.partitions}\t{state}")


main.add_command(model)


def _pointer_call(settings: Settings, call: Callable[[ModelPointer], Awaitable[T]]) -> T:
    from streams.verdict_store import connect

    async def run() -> T:
        client = connect(settings.redis_dsn)
        try:
            return await call(ModelPointer(client, key_prefix=settings.topic_prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


@model.command()
@click.argument("target")
@click.option("--as-version", "as_version", help="register a directory under this version")
@click.option("--change", "changes", multiple=True, help="what changed (repeatable)")
@click.pass_obj
def promote(
    settings: Settings, target: str, as_version: str | None, changes: tuple[str, ...]
) -> None:
    """Make TARGET the model every scorer runs: a registered version, or a model directory
    (registered first). Running scorers switch within seconds, between batches."""
    from l2loop.services import attached_settings

    live = attached_settings(settings)
    registry = ModelRegistry(live.registry_dir)
    try:
        if Path(target).is_dir():
            version = registry.add(Path(target), version=as_version, changes=list(changes)).version
        else:
            version = target
        current = _pointer_call(live, lambda pointer: pointer.promote(registry, version))
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"current model: {current.version} ({current.path})")


@model.command()
@click.pass_obj
def rollback(settings: Settings) -> None:
    """Point the scorers back at the model that was current before the last promotion."""
    from l2loop.services import attached_settings

    live = attached_settings(settings)
    try:
        current = _pointer_call(live, lambda pointer: pointer.rollback())
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"current model: {current.version} ({current.path})")


@model.command("list")
@click.pass_obj
def list_models(settings: Settings) -> None:
    """The registered versions, oldest first; `*` marks the current one."""
    from l2loop.services import attached_settings

    live = attached_settings(settings)
    current = _pointer_call(live, lambda pointer: pointer.current())
    for meta in ModelRegistry(live.registry_dir).versions():
        mark = "*" if current is not None and current.version == meta.version else " "
        changes = "; ".join(meta.changes) or "-"
        registered = f"{meta.registered_at:%Y-%m-%d}"
        click.echo(f"{mark} {meta.version}\t{meta.name}\t{meta.kind}\t{registered}\t{changes}")
    if current is None:
        click.echo(f"no model promoted: scorers run {live.model_dir}")


@main.command()
@click.pass_obj
def api(settings: Settings) -> None:
    """Serve the HTTP API (reports; OpenAPI at /openapi.json) on the configured host/port."""
    import uvicorn

    from l2loop.api.app import create_api
    from l2loop.services import attached_settings

    live = attached_settings(settings)
    uvicorn.run(create_api(live), host=live.api_host, port=live.api_port, log_config=None)


def _with_reports(settings: Settings, call: Callable[[ReportServices], Awaitable[T]]) -> T:
    from streams.reports import report_services

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
    from l2loop.services import attached_settings
    from streams.tenants import TenantError

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


@tenants.command("list")
@click.pass_obj
def tenants_list(settings: Settings) -> None:
    """Every tenant: id, state, created, key issued."""
    for record in _tenant_call(settings, lambda keys: keys.list()):
        state = "active" if record.active else "revoked"
        click.echo(
            f"{record.tenant_id}\t{state}\t{record.created_at:%Y-%m-%d %H:%M}\t"
            f"{record.key_issued_at:%Y-%m-%d %H:%M}"
        )


@main.group()
def review() -> None:
    """Quarantined reports: list them, release them into training, or discard them."""


@review.command("list")
@click.pass_obj
def review_list(settings: Settings) -> None:
    """Pending quarantined reports, oldest first, one JSON object a line."""
    from l2loop.services import attached_settings

    held = _with_reports(attached_settings(settings), lambda s: s.queue.pending())
    for item in held:
        line = {
            "report_id": item.report.report_id,
            "reason": item.reason,
            "detail": item.detail,
            "tenant_id": item.report.tenant_id,
            "reporter_id": item.report.reporter_id,
            "kind": item.report.kind,
            "model_score": item.verdict.score if item.verdict is not None else None,
            "text": item.text,
        }
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")


@review.command("log")
@click.pass_obj
def review_log(settings: Settings) -> None:
    """Every review decision so far (who, when, why), oldest first, as JSON lines."""
    from l2loop.services import attached_settings

    for decision in _with_reports(attached_settings(settings), lambda s: s.queue.decisions()):
        sys.stdout.buffer.write(orjson.dumps(decision.model_dump(mode="json")) + b"\n")


def _decide(settings: Settings, report_id: str, action: str, reviewer: str, why: str) -> str:
    from aiokafka import AIOKafkaProducer

    from l2loop.services import attached_settings
    from streams.reports import Reviewer, ReviewError
    from streams.topics import CURATED_EXAMPLES

    live = attached_settings(settings)

    async def decide(services: ReportServices) -> str:
        producer = AIOKafkaProducer(bootstrap_servers=live.bootstrap_servers)
        await producer.start()

        async def publish(topic: str, key: bytes | None, value: bytes) -> Awaitable[object]:
            delivery: Awaitable[object] = await producer.send(topic, value, key=key)
            return delivery

        try:
            reviewer_ = Reviewer(
                services.queue,
                services.support,
                services.ledger,
                publish,
                curated_topic=live.topic(CURATED_EXAMPLES),
            )
            if action == "release":
                example = await reviewer_.release(report_id, reviewer, why)
                return f"released {report_id}: example {example.example_id} curated"
            await reviewer_.discard(report_id, reviewer, why)
            return f"discarded {report_id}"
        finally:
            await producer.stop()

    try:
        return _with_reports(live, decide)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc


_REVIEWER = click.option("--reviewer", required=True, help="who decides (kept in the audit log)")
_WHY = click.option("--why", required=True, help="why (kept in the audit log)")


@review.command("release")
@click.argument("report_id")
@_REVIEWER
@_WHY
@click.pass_obj
def review_release(settings: Settings, report_id: str, reviewer: str, why: str) -> None:
    """Release REPORT_ID into curated-examples, marked released-in-review."""
    click.echo(_decide(settings, report_id, "release", reviewer, why))


@review.command("discard")
@click.argument("report_id")
@_REVIEWER
@_WHY
@click.pass_obj
def review_discard(settings: Settings, report_id: str, reviewer: str, why: str) -> None:
    """Discard REPORT_ID: it teaches nothing."""
    click.echo(_decide(settings, report_id, "discard", reviewer, why))
