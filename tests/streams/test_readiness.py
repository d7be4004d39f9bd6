"""The worker's probes, on a real worker process: ``/ready`` answers 503 naming what it waits
for until its consumers have joined their groups, then 200; ``/health`` (liveness) answers
200 all along. The Helm chart probes these paths (tests/deploy/test_helm_chart.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from l2loop.resilience import ReadinessReport
from l2loop.settings import Settings
from l2loop.streams.consumer import assignment_of, consumer_group
from tests.fixtures.faults import MakeService, fault_settings
from tests.fixtures.pipeline import WorkerProcess
from tests.fixtures.scenario import start_worker, wait_for_log

# The paths the chart's probes use.
READINESS_PATH = "/ready"
LIVENESS_PATH = "/health"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]

    @property
    def readiness(self) -> ReadinessReport:
        return ReadinessReport.model_validate(self.body)


def ask(settings: Settings, path: str) -> Answer | None:
    """The worker's answer on ``path``; None while nothing listens on its web port."""
    try:
        response = httpx.get(f"http://127.0.0.1:{settings.web_port}{path}", timeout=2)
    except httpx.TransportError:
        return None
    return Answer(response.status_code, response.json())


def answers_until_ready(worker: WorkerProcess, timeout_s: float) -> list[Answer]:
    """Every answer of ``/ready``, polled as often as it answers, up to the first 200."""
    answers: list[Answer] = []
    deadline = time.monotonic() + timeout_s
    while not answers or answers[-1].status != 200:
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, f"not ready in {timeout_s}s: {answers[-3:]}"
        answer = ask(worker.settings, READINESS_PATH)
        if answer is not None:
            answers.append(answer)
        time.sleep(0.02)
    return answers


@pytest.mark.timeout(120)
def test_ready_once_every_consumer_has_joined_its_group(topics: Settings, tmp_path: Path) -> None:
    # Both kinds of consumer: Faust's (group APP_ID) and the score and window agents' own
    # (APP_ID.score, APP_ID.windows).
    groups = {
        assignment_of(topics.app_id),
        *(assignment_of(consumer_group(topics, agent)) for agent in ("score", "windows")),
    }
    worker = start_worker(topics, tmp_path)
    try:
        answers = answers_until_ready(worker, timeout_s=90)
        # The web server listens before the groups are joined (each join waits out the
        # broker's initial rebalance delay): the probe sees the worker wait.
        waiting = [answer for answer in answers if answer.status == 503]
        assert waiting, answers
        assert {*waiting[0].readiness.waiting_for} <= groups
        assert all(not answer.readiness.ready for answer in waiting)
        assert answers[-1].readiness == ReadinessReport(ready=True, waiting_for=[])
        # The groups were joined by then (the score consumer logs its assignment).
        assert "event=partitions_assigned" in worker.log()
        health = ask(topics, LIVENESS_PATH)
        assert health is not None and health.status == 200, health
    finally:
        worker.stop()


@pytest.mark.timeout(180)
def test_not_ready_while_the_broker_is_not_there_yet(
    own_broker: MakeService, service_endpoints: tuple[str, str], tmp_path: Path
) -> None:
    broker = own_broker()  # made, not started
    settings = fault_settings(
        f"127.0.0.1:{broker.port}", service_endpoints[1], tmp_path / "var"
    ).model_copy(update={"worker_roles": "score"})
    worker = start_worker(settings, tmp_path)
    try:
        wait_for_log(worker, "event=dependency_waiting dependency=kafka")
        # The worker waits for its dependencies before it serves anything: no probe passes,
        # liveness neither (the chart's startup probe outlasts L2LOOP_STARTUP_TIMEOUT_S).
        assert ask(settings, READINESS_PATH) is None
        assert ask(settings, LIVENESS_PATH) is None
        broker.start()
        answers = answers_until_ready(worker, timeout_s=120)
        assert answers[-1].readiness == ReadinessReport(ready=True, waiting_for=[])
        # While the broker is there but the score consumer has not joined yet.
        assert all(
            answer.readiness.waiting_for == [assignment_of(consumer_group(settings, "score"))]
            for answer in answers
            if answer.status == 503
        ), answers
    finally:
        worker.stop()
