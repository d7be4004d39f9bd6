"""Worker roles: each role registers its own agent, so that roles scale apart."""

from __future__ import annotations

import asyncio

import pytest

from l2loop.settings import WORKER_ROLES, Settings
from streams.app import READS, ROLES, RolesSplitError, create_app, split_readers

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


@pytest.mark.parametrize("roles", ["score", "windows,alerts,curated", "all"])
def test_a_worker_runs_only_its_roles(settings: Settings, roles: str) -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings.model_copy(update={"worker_roles": roles}))
    wanted = WORKER_ROLES if roles == "all" else tuple(roles.split(","))
    assert set(app.agents) == {AGENT_OF[role] for role in wanted}


def test_each_role_reads_the_topics_it_declares(settings: Settings) -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    for role, agent in AGENT_OF.items():
        read = set(app.agents[agent].channel.topics)
        assert read == {settings.topic(topic) for topic in READS[role]}, role


@pytest.mark.parametrize(
    ("roles", "together"),
    [
        ("windows", "windows,curated"),
        ("curated", "windows,curated"),
        ("windows,alerts", "windows,alerts,curated"),
        ("score,curated", "score,windows,curated"),
    ],
)
def test_a_worker_refuses_roles_that_split_the_readers_of_a_topic(
    settings: Settings, roles: str, together: str
) -> None:
    # The window agent and the curated sink both read curated-examples: in one consumer group
    # across two workers each would read only some of its partitions.
    asyncio.set_event_loop(asyncio.new_event_loop())
    with pytest.raises(RolesSplitError, match="curated-examples") as refused:
        create_app(settings.model_copy(update={"worker_roles": roles}))
    assert str(refused.value).endswith(f"run {together} together")


def test_roles_that_share_no_topic_scale_apart() -> None:
    for roles in (("score",), ("reports",), ("alerts",), ("score", "reports"), ROLES):
        assert split_readers(tuple(roles)) == []
