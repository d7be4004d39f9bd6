"""How a command reaches the services: the settings of those it attaches to, and the one way
it opens a Redis client and closes it again."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import click
import redis.asyncio as aioredis

from l2loop.infra.services import attached_settings
from l2loop.settings import Settings
from l2loop.stores.verdicts import connected

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def pass_attached(command: Callable[Concatenate[Settings, P], R]) -> Callable[P, R]:
    """``click.pass_obj``, passing the settings of the services the command attaches to: the
    configured ones, else those of a running ``l2loop up`` (a one-line error when neither)."""

    @click.pass_obj
    @functools.wraps(command)
    def attach(settings: Settings, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return command(attached_settings(settings), *args, **kwargs)

    return attach


def with_redis(settings: Settings, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Runs ``call`` to completion on a client of the settings' Redis, closed after it."""

    async def run() -> T:
        async with connected(settings.redis_dsn) as client:
            return await call(client)

    return asyncio.run(run())
