"""The loop's topics and the records on them: ``topics``, ``produce``, ``tail`` and
``schemas export``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import click
import orjson

from l2loop.cli.clients import pass_attached
from l2loop.infra.clients import decode_value, produce_lines, tail_records
from l2loop.infra.topics import TOPICS, ensure_topics
from l2loop.schemas.export import export_json_schemas
from l2loop.settings import Settings


@click.command()
@pass_attached
def topics(live: Settings) -> None:
    """Create the missing topics on the configured broker and list all of the loop's."""
    created = set(asyncio.run(ensure_topics(live)))
    for spec in TOPICS:
        name = live.topic(spec.name)
        state = "created" if name in created else "exists"
        click.echo(f"{name}\t{spec.partitions or live.partitions}\t{state}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default="scan-events", show_default=True, help="topic, without prefix")
@pass_attached
def produce(live: Settings, file: Path, topic: str) -> None:
    """Send every line of FILE (JSONL) as one record, unchanged."""
    lines = [line for line in file.read_bytes().splitlines() if line.strip()]
    sent = asyncio.run(produce_lines(live, live.topic(topic), lines))
    click.echo(f"sent {sent} records to {live.topic(topic)}")


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="start at the oldest record")
@click.option("--idle-exit", type=float, default=None, help="exit after this many quiet seconds")
@pass_attached
def tail(live: Settings, topic: str, from_beginning: bool, idle_exit: float | None) -> None:
    """Print the decoded records of TOPIC (name without prefix), one JSON object a line."""

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


@click.group()
def schemas() -> None:
    """The wire schemas."""


@schemas.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write one JSON Schema file per record type into DIRECTORY."""
    for path in export_json_schemas(directory):
        click.echo(str(path))
