"""Windows, alerts and the dashboard page that charts them."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from l2loop.api.context import ApiContext, ApiError, api_context
from l2loop.schemas.windows import Alert, WindowStats
from l2loop.stores.alerts import AlertStore
from l2loop.streams.alert_rules import Thresholds

router = APIRouter()
# A bad parameter is answered like every other error of the API (l2loop.api.app).
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ApiError, "description": "a parameter out of range"}
}


class WindowsResponse(BaseModel):
    hours: int
    thresholds: Thresholds
    windows: list[WindowStats]


class AlertsResponse(BaseModel):
    open: list[Alert]
    recent: list[Alert]


def alert_store(context: Annotated[ApiContext, Depends(api_context)]) -> AlertStore:
    return AlertStore(context.redis, key_prefix=context.settings.topic_prefix)


@router.get("/v1/windows", tags=["windows"], responses=_INVALID)
async def list_windows(
    context: Annotated[ApiContext, Depends(api_context)],
    store: Annotated[AlertStore, Depends(alert_store)],
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 48,
) -> WindowsResponse:
    """Every model version's latest window of the ``hours`` hours up to the newest window."""
    return WindowsResponse(
        hours=hours,
        thresholds=Thresholds.from_settings(context.settings),
        windows=await store.recent_windows(hours),
    )


@router.get("/v1/alerts", tags=["alerts"], responses=_INVALID)
async def list_alerts(
    store: Annotated[AlertStore, Depends(alert_store)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertsResponse:
    """The alerts firing now, and the latest state changes, newest first."""
    open_alerts = await store.open_alerts()
    return AlertsResponse(
        open=sorted(open_alerts.values(), key=lambda a: a.starts_at, reverse=True),
        recent=await store.history(limit),
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    page = resources.files("l2loop.api").joinpath("templates/dashboard.html").read_text()
    return HTMLResponse(page)
