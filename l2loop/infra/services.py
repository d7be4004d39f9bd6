"""Which broker and Redis a command talks to: configured ones, a running ``l2loop up``, or
embedded ones started for the command's lifetime."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import click
import orjson
from pydantic import BaseModel, SecretStr

from l2loop.infra.embedded import (
    EMBEDDED_BUCKET,
    ManagedProcess,
    current_pid_alive,
    embedded_services,
)
from l2loop.infra.topics import ensure_topics
from l2loop.resilience import kafka_answers, redis_answers, wait_until_reachable
from l2loop.settings import Settings
from l2model.private import private_dir, write_private

RUNTIME_FILE = "up.json"


class RunningUp(BaseModel):
    """Written by ``l2loop up`` so that other commands in other terminals can find it."""

    pid: int
    kafka_broker: str
    # The address only (scheme, host, port, db): up.json never holds a password.
    redis_url: str
    # Where the Redis of `up` needs more than its address (a user, a password, options),
    # attaching commands take it from their own L2LOOP_REDIS_URL.
    redis_url_withheld: bool = False
    topic_prefix: str
    api_url: str | None = None
    # The embedded S3 server's address, where `up` keeps the shared state in one (it takes
    # anonymous requests on loopback: nothing secret here either).
    s3_endpoint: str | None = None
    # What `up` runs, by name, and the pid each runs under now (it changes on a restart).
    processes: dict[str, int] = {}


def _runtime_path(settings: Settings) -> Path:
    return settings.data_dir / RUNTIME_FILE


def find_running_up(settings: Settings) -> RunningUp | None:
    path = _runtime_path(settings)
    if not path.exists():
        return None
    running = RunningUp.model_validate_json(path.read_bytes())
    return running if current_pid_alive(running.pid) else None


@contextlib.contextmanager
def announce_up(
    settings: Settings, *, api_url: str | None = None
) -> Iterator[Callable[[dict[str, int]], None]]:
    """Writes ``up.json`` for other terminals; yields a function that rewrites it with the
    processes' current pids (a supervisor calls it after each restart)."""
    path = _runtime_path(settings)
    private_dir(path.parent)
    dsn = settings.redis_dsn
    parts = urlsplit(dsn)

    def write(processes: dict[str, int]) -> None:
        record = RunningUp(
            pid=os.getpid(),
            kafka_broker=",".join(settings.bootstrap_servers),
            redis_url=redis_address(dsn),
            redis_url_withheld=bool(parts.username or parts.password or parts.query),
            topic_prefix=settings.topic_prefix,
            api_url=api_url,
            s3_endpoint=settings.s3_endpoint if settings.s3_unsigned else None,
            processes=processes,
        )
        # Readers in other terminals never see a half-written file.
        staging = path.with_suffix(".tmp")
        write_private(staging, orjson.dumps(record.model_dump()))
        staging.replace(path)

    write({})
    try:
        yield write
    finally:
        path.unlink(missing_ok=True)


def attached_settings(settings: Settings) -> Settings:
    """Settings for client commands: configured services, else those of a running ``up``."""
    if settings.kafka_broker and settings.redis_url:
        return settings
    running = find_running_up(settings)
    if running is None:
        raise click.ClickException(
            "no broker configured: set L2LOOP_KAFKA_BROKER and L2LOOP_REDIS_URL, "
            "or start `l2loop up` first (this command attaches to it)"
        )
    if running.redis_url_withheld and settings.redis_url is None:
        raise click.ClickException(
            f"the Redis of `l2loop up` (pid {running.pid}) needs credentials that "
            f"{_runtime_path(settings)} does not hold: set L2LOOP_REDIS_URL as `up` has it"
        )
    attached = settings.model_copy(
        update={
            "kafka_broker": settings.kafka_broker or running.kafka_broker,
            "redis_url": settings.redis_url or SecretStr(running.redis_url),
            "topic_prefix": running.topic_prefix,
        }
    )
    if running.s3_endpoint and settings.store_url is None:
        # The registry, curated store and datasets that `up`'s processes use.
        attached = attached.model_copy(update=embedded_store(running.s3_endpoint))
    return attached


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[tuple[Settings, tuple[ManagedProcess, ...]]]:
    """Settings for serving commands: embedded services stand in for any that are unset.
    Also yields the embedded servers' processes (none when all are configured)."""
    need_kafka, need_redis = settings.kafka_broker is None, settings.redis_url is None
    need_s3 = settings.embedded_s3 and settings.store_url is None
    if not (need_kafka or need_redis or need_s3):
        yield settings, ()
        return
    with embedded_services(
        settings.data_dir / "embedded", kafka=need_kafka, redis=need_redis, s3=need_s3
    ) as ep:
        live = settings.with_services(
            settings.kafka_broker or ep.kafka_broker,
            settings.redis_dsn if settings.redis_url else ep.redis_url,
        )
        if need_s3:
            live = live.model_copy(update=embedded_store(ep.s3_endpoint))
        yield live, ep.processes


def embedded_store(endpoint: str) -> dict[str, object]:
    """The settings that put the shared state in the embedded S3 server's bucket."""
    return {"store_url": f"s3://{EMBEDDED_BUCKET}", "s3_endpoint": endpoint, "s3_unsigned": True}


@contextlib.contextmanager
def serving_settings(settings: Settings) -> Iterator[Settings]:
    with serving(settings) as (live, _):
        yield live


def redis_address(dsn: str) -> str:
    """The DSN as it may be printed: host, port and db, without a password."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


async def await_services(settings: Settings) -> None:
    """Start-up of a serving process: waits for the broker and Redis (each for at most
    ``startup_timeout_s``, one log line per attempt), then creates the missing topics.

    Raises DependencyUnreachable, naming the address, when one does not answer in time.
    """
    await wait_until_reachable(
        lambda: kafka_answers(settings.bootstrap_servers),
        dependency="kafka",
        address=",".join(settings.bootstrap_servers),
        timeout_s=settings.startup_timeout_s,
        backoff=settings.backoff,
    )
    await wait_until_reachable(
        lambda: redis_answers(settings.redis_dsn),
        dependency="redis",
        address=redis_address(settings.redis_dsn),
        timeout_s=settings.startup_timeout_s,
        backoff=settings.backoff,
    )
    await ensure_topics(settings)
