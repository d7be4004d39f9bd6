"""The HTTP answers of POST /v1/reports that need no worker: each fault named precisely."""

from __future__ import annotations

import httpx

from l2loop.settings import Settings
from tests.fixtures.api import serve_api, tenant_key


def test_request_level_faults_and_the_openapi_document(topics: Settings) -> None:
    settings = topics.model_copy(update={"report_batch_max": 4})
    key = tenant_key(settings, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    report = {"event_id": "ev-1", "reporter_id": "alice", "kind": "false_positive"}
    with serve_api(settings) as api, httpx.Client(base_url=api.base_url) as client:
        missing = client.post("/v1/reports", json=report)
        assert (missing.status_code, missing.json()["code"]) == (401, "missing_key")
        assert missing.headers["www-authenticate"] == "Bearer"

        too_many = client.post("/v1/reports", json=[report] * 5, headers=auth)
        assert (too_many.status_code, too_many.json()["code"]) == (413, "batch_too_large")
        empty = client.post("/v1/reports", json=[], headers=auth)
        assert (empty.status_code, empty.json()["field"]) == (400, "body")

        # Each report's fault names its field; a batch answers its reports' shared status, else
        # 207.
        batch = [
            {**report, "kind": "praise"},
            {"reporter_id": "bob", "kind": "false_positive"},
            {"event_id": "e", "reporter_id": "c", "kind": "false_negative", "reason": "PI"},
        ]
        answer = client.post("/v1/reports", json=batch, headers=auth)
        assert answer.status_code == 400, answer.text
        answer = client.post(
            "/v1/reports", json=[*batch, {**report, "event_id": "gone"}], headers=auth
        )
        assert answer.status_code == 207, answer.text
        results = answer.json()["results"]
        assert [(r["status"], r["code"], r["field"]) for r in results] == [
            (400, "invalid_field", "kind"),
            (400, "invalid_field", "event_id"),
            (400, "missing_text", "text"),
            (404, "unknown_event", "event_id"),
        ]
        assert answer.json()["accepted"] == 0 and answer.json()["rejected"] == 4
        other = client.post("/v1/reports", json={**report, "tenant_id": "globex"}, headers=auth)
        assert (other.status_code, other.json()["results"][0]["code"]) == (403, "wrong_tenant")
        unknown = client.post("/v1/reports", json=report, headers=auth)
        assert unknown.status_code == 404
        assert unknown.json()["results"][0]["field"] == "event_id"

        assert client.get("/v1/reports/nope", headers=auth).status_code == 404
        spec = client.get("/openapi.json").json()
        assert {"post"} <= set(spec["paths"]["/v1/reports"])
        assert "/v1/reports/{report_id}" in spec["paths"]
