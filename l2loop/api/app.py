"""The ASGI application: shared clients, routers, health and Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from starlette.exceptions import HTTPException

from l2loop.api.context import ApiContext, ApiError, error_response
from l2loop.api.reports import router as reports_router
from l2loop.api.rollout import router as rollout_router
from l2loop.api.windows import router as windows_router
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # Unknown paths, wrong methods: the same shape as the routes' own errors, so that a
    # client reads `code` from every 4xx.
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    error = ApiError(code=code, detail=str(exc.detail))
    return error_response(exc.status_code, error, headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    # loc is ("query", "hours"): the parameter is what the client can correct.
    field = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
    error = ApiError(code="invalid_parameter", detail=f"{field}: {first['msg']}", field=field)
    return error_response(422, error)


def create_api(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect(settings.redis_dsn)
        # acks=all: a report the API answered 202 for survives the loss of a broker.
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks="all"
        )
        await producer.start()
        app.state.context = ApiContext(settings=settings, redis=client, producer=producer)
        try:
            yield
        finally:
            await producer.stop()
            await client.aclose()

    app = FastAPI(
        title="l2loop",
        summary="Reports, windows, alerts and rollouts of the L2 prompt-threat classifier's loop.",
        version="1",
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, RequestValidationError: _invalid_request},
    )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(reports_router)
    app.include_router(windows_router)
    app.include_router(rollout_router)
    app.mount("/static", StaticFiles(packages=[("l2loop.api", "static")]), name="static")
    app.mount("/metrics", make_asgi_app())
    return app
