"""Worker roles: each role registers its own agent, so that roles scale apart; and the
worker's web server listens on loopback unless told otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from l2loop.settings import WORKER_ROLES, Settings
from l2loop.streams.app import READS, ROLES, RolesSplitError, create_app, split_readers
from tests.fixtures.exposure import accepts, is_loopback, listening_addresses
from tests.fixtures.pipeline import WorkerProcess

# The Faust agent each role's registration declares; the score and window roles read with
# consumers of their own (l2loop.streams.consumer), which their suites run end to end.
AGENT_OF: dict[str, str | None] = {
    "score": None,
    "reports": "reports",
    "windows": None,
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
    assert set(app.agents) == {AGENT_OF[role] for role in wanted} - {None}


def test_each_role_reads_the_topics_it_declares(settings: Settings) -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    for role, agent in AGENT_OF.items():
        if agent is None:
            continue
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


def _serving_health(worker: WorkerProcess) -> None:
    """Waits until the worker answers /health on loopback."""
    url = f"http://127.0.0.1:{worker.settings.web_port}/health"
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)


@pytest.mark.timeout(150)
def test_the_worker_web_port_is_not_reachable_on_a_non_loopback_address(
    worker: WorkerProcess, outside_address: str
) -> None:
    _serving_health(worker)
    port = worker.settings.web_port
    assert not accepts(outside_address, port)
    assert worker.process is not None
    listening = listening_addresses(worker.process.pid)
    assert ("127.0.0.1", port) in listening
    assert all(is_loopback(address) for address, _ in listening), listening


@pytest.mark.timeout(150)
def test_web_bind_opens_the_worker_web_port_where_configured(
    topics: Settings, outside_address: str
) -> None:
    # What a container sets, so that probes and a scraper on its network reach /health.
    settings = topics.model_copy(update={"web_bind": "0.0.0.0"})
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        _serving_health(worker)
        assert accepts(outside_address, settings.web_port)
    finally:
        worker.stop()
