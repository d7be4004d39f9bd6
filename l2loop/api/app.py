"""The ASGI application: shared clients, routers, health and Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app

from l2loop.settings import Settings
from streams.verdict_store import connect


@dataclass(frozen=True)
class ApiContext:
    """What every route may use; built once per process by the lifespan."""

    settings: Settings
    redis: aioredis.Redis
    producer: AIOKafkaProducer


def api_context(request: Request) -> ApiContext:
    """FastAPI dependency: the process's shared context."""
    context: ApiContext = request.app.state.context
    return context


def create_api(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect(settings.redis_dsn)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
        await producer.start()
        app.state.context = ApiContext(settings=settings, redis=client, producer=producer)
        try:
            yield
        finally:
            await producer.stop()
            await client.aclose()

    app = FastAPI(
        title="l2loop",
        summary="Reports, windows and alerts of the L2 prompt-threat classifier's loop.",
        version="1",
        lifespan=lifespan,
    )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Routers import ApiContext from this module, so they are imported once it exists.
    from l2loop.api.reports import router as reports_router
    from l2loop.api.windows import router as windows_router

    app.include_router(reports_router)
    app.include_router(windows_router)
    app.mount("/static", StaticFiles(packages=[("l2loop.api", "static")]), name="static")
    app.mount("/metrics", make_asgi_app())
    return app
