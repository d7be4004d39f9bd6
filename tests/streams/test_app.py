"""Worker roles: each role registers its own agent, so that roles scale apart."""

from __future__ import annotations

import asyncio

import pytest

from l2loop.settings import WORKER_ROLES, Settings
from streams.app import ROLES, create_app

# The agent each role's registration declares.
AGENT_OF = {
    "score": "score",
    "reports": "reports",
    "windows": "windows",
    "alerts": "alerts",
    "curated": "curated-sink",
}


def test_every_role_has_an_agent() -> None:
    assert tuple(ROLES) == WORKER_ROLES


@pytest.mark.parametrize("roles", ["score", "windows,alerts", "all"])
def test_a_worker_runs_only_its_roles(settings: Settings, roles: str) -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings.model_copy(update={"worker_roles": roles}))
    wanted = WORKER_ROLES if roles == "all" else tuple(roles.split(","))
    assert set(app.agents) == {AGENT_OF[role] for role in wanted}
