"""`GET /v1/rollout` on the real HTTP server, over rollout state the commands and the
controller wrote to the real Redis."""

from __future__ import annotations

import httpx

from l2loop.api.rollout import RolloutResponse
from tests.fixtures.api import ApiServer
from tests.fixtures.models import MakeModel
from tests.fixtures.rollout import ABORT_REASON, seed_rollouts


def test_the_rollout_its_waits_and_the_finished_runs_over_http(
    api_server: ApiServer, redis_client: object, make_model_dir: MakeModel
) -> None:
    url = f"{api_server.base_url}/v1/rollout"
    before = httpx.get(url, timeout=10)
    assert before.status_code == 200
    assert before.json() == {"current": None, "waiting_for": [], "runs": []}

    current = seed_rollouts(api_server.settings, make_model_dir)
    body = RolloutResponse.model_validate_json(httpx.get(url, timeout=10).content)
    assert body.current == current
    assert (body.current.candidate.version, body.current.stage, body.current.status) == (
        "2.1.0",
        "10",
        "running",
    )
    assert "events 400/1000" in body.waiting_for
    assert any(wait.startswith("hold ") for wait in body.waiting_for)
    assert [(run.candidate.version, run.status, run.reason) for run in body.runs] == [
        ("2.0.0", "aborted", ABORT_REASON)
    ]
    assert httpx.get(url, params={"limit": 1}, timeout=10).json()["runs"][0]["status"] == "aborted"

    refused = httpx.get(url, params={"limit": 0}, timeout=10)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_parameter"

    schema = httpx.get(f"{api_server.base_url}/openapi.json", timeout=10).json()
    assert "/v1/rollout" in schema["paths"]
    answer = schema["paths"]["/v1/rollout"]["get"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"]["$ref"].endswith("/RolloutResponse")
    assert {"RolloutResponse", "Rollout", "Comparison", "Check"} <= set(
        schema["components"]["schemas"]
    )
