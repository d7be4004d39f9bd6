"""What every router of the API shares: the process's clients and the shape of its errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from l2loop.settings import Settings


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


class ApiError(BaseModel):
    """Every error the API answers: a code to branch on, a sentence, the field at fault."""

    code: str
    detail: str
    field: str | None = None


def error_response(
    status: int, error: ApiError, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error.model_dump(exclude_none=True), status_code=status, headers=headers)
