"""Which broker and Redis a command talks to: configured ones, a running ``l2loop up``, or
embedded ones started for the command's lifetime."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import click
import orjson
from pydantic import BaseModel, SecretStr

from l2loop.embedded import current_pid_alive, embedded_services
from l2loop.settings import Settings

RUNTIME_FILE = "up.json"


class RunningUp(BaseModel):
    """Written by ``l2loop up`` so that other commands in other terminals can find it."""

    pid: int
    kafka_broker: str
    redis_url: str
    topic_prefix: str
    api_url: str | None = None


def _runtime_path(settings: Settings) -> Path:
    return settings.data_dir / RUNTIME_FILE


def find_running_up(settings: Settings) -> RunningUp | None:
    path = _runtime_path(settings)
    if not path.exists():
        return None
    running = RunningUp.model_validate_json(path.read_bytes())
    return running if current_pid_alive(running.pid) else None


@contextlib.contextmanager
def announce_up(settings: Settings, api_url: str | None = None) -> Iterator[None]:
    path = _runtime_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = RunningUp(
        pid=os.getpid(),
        kafka_broker=",".join(settings.bootstrap_servers),
        redis_url=settings.redis_dsn,
        topic_prefix=settings.topic_prefix,
        api_url=api_url,
    )
    path.write_bytes(orjson.dumps(record.model_dump()))
    try:
        yield
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
    return settings.model_copy(
        update={
            "kafka_broker": settings.kafka_broker or running.kafka_broker,
            "redis_url": settings.redis_url or SecretStr(running.redis_url),
            "topic_prefix": running.topic_prefix,
        }
    )


@contextlib.contextmanager
def serving_settings(settings: Settings) -> Iterator[Settings]:
    """Settings for serving commands: embedded services stand in for any that are unset."""
    need_kafka, need_redis = settings.kafka_broker is None, settings.redis_url is None
    if not (need_kafka or need_redis):
        yield settings
        return
    with embedded_services(
        settings.data_dir / "embedded", kafka=need_kafka, redis=need_redis
    ) as ep:
        yield settings.with_services(
            settings.kafka_broker or ep.kafka_broker,
            settings.redis_dsn if settings.redis_url else ep.redis_url,
        )
