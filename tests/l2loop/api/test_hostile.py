"""Hostile requests against the real HTTP server: refused before the body is read, counted
once, and every error a JSON body with a ``code``.

The requests that must not be read are written on a raw socket, so that the test decides how
much of the body the server could have seen when it answered: an answer that arrives while
most of the body is still unsent was given without reading it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from l2loop.settings import Settings
from tests.fixtures.api import ApiServer, ledger_counts, serve_api, tenant_key

CAP = 64 * 1024
# What a client that waits for an answer waits at most: a server that needs the rest of the
# body never answers, and the test fails instead of hanging.
STALL_GUARD_S = 60

ZEROS = b"[" + b"0," * 999_999 + b"0]"  # 1,000,000 items, 2 MB


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Api:
    server: ApiServer
    key: str

    @property
    def settings(self) -> Settings:
        return self.server.settings


@pytest.fixture
def api(topics: Settings) -> Iterator[Api]:
    settings = topics.model_copy(update={"api_max_body_bytes": CAP})
    key = tenant_key(settings, "acme")
    with serve_api(settings) as server:
        yield Api(server, key)


def _read_answer(sock: socket.socket) -> Answer:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without answering: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        rest += chunk
    return Answer(int(status_line.split()[1]), headers, orjson.loads(rest[:length]))


def _post_unfinished(
    api: Api, headers: dict[str, str], sent: bytes, *, chunked: bool = False
) -> Answer:
    """POSTs /v1/reports, writes only ``sent`` of the body and waits for the answer with the
    rest of the body (if any was announced) never sent."""
    address = urlsplit(api.server.base_url)
    assert address.hostname is not None and address.port is not None
    lines = ["POST /v1/reports HTTP/1.1", f"Host: {address.netloc}", *_header_lines(headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        piece = 16 * 1024
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(sent[i : i + piece]), sent[i : i + piece])
            for i in range(0, len(sent), piece)
        )
    else:
        payload = sent
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
    with socket.create_connection((address.hostname, address.port), STALL_GUARD_S) as sock:
        sock.sendall(request)
        return _read_answer(sock)


def _header_lines(headers: dict[str, str]) -> list[str]:
    return [f"{name}: {value}" for name, value in headers.items()]


def _rejected(api: Api, reason: str) -> tuple[int, float]:
    """The ledger's and Prometheus' counts of refusals for ``reason``."""
    counted = ledger_counts(api.settings).get(f"rejected:{reason}", 0)
    sample = REGISTRY.get_sample_value(
        "l2loop_reports_total", {"route": "rejected", "reason": reason}
    )
    return counted, sample or 0.0


def _grew_by_one(before: tuple[int, float], after: tuple[int, float]) -> bool:
    return after[0] == before[0] + 1 and after[1] == before[1] + 1


def test_an_unauthenticated_two_megabyte_body_is_refused_unread_and_counted_once(
    api: Api,
) -> None:
    before = _rejected(api, "missing_key")
    # 2 MB announced, the first 64 KiB written: the answer cannot wait for the rest.
    answer = _post_unfinished(api, {"Content-Length": str(len(ZEROS))}, ZEROS[:CAP])
    assert answer.status == 401, answer
    assert answer.body["code"] == "missing_key"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert _grew_by_one(before, _rejected(api, "missing_key"))

    # A wrong key and 50 MB announced, not a byte of it sent.
    before = _rejected(api, "bad_key")
    bad = {"Authorization": "Bearer l2k_" + "x" * 43, "Content-Length": str(50 * 1024 * 1024)}
    answer = _post_unfinished(api, bad, b"")
    assert (answer.status, answer.body["code"]) == (401, "bad_key")
    assert _grew_by_one(before, _rejected(api, "bad_key"))

    # The same without a Content-Length: a chunked body is not read either.
    before = _rejected(api, "missing_key")
    answer = _post_unfinished(api, {}, ZEROS[:CAP], chunked=True)
    assert (answer.status, answer.body["code"]) == (401, "missing_key")
    assert _grew_by_one(before, _rejected(api, "missing_key"))

    with httpx.Client(base_url=api.server.base_url, timeout=STALL_GUARD_S) as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_a_body_over_the_limit_is_refused_without_reading_on_and_counted_once(
    api: Api,
) -> None:
    auth = {"Authorization": f"Bearer {api.key}"}

    # Announced: refused before a byte of it is read.
    before = _rejected(api, "body_too_large")
    announced = {**auth, "Content-Length": str(50 * 1024 * 1024)}
    answer = _post_unfinished(api, announced, b"")
    assert answer.status == 413, answer
    assert answer.body["code"] == "body_too_large" and answer.body["field"] == "body"
    assert str(CAP) in answer.body["detail"]
    assert _grew_by_one(before, _rejected(api, "body_too_large"))

    # Chunked: refused once the stream passes the limit, with the body's end never sent.
    before = _rejected(api, "body_too_large")
    answer = _post_unfinished(api, auth, ZEROS[: 2 * CAP], chunked=True)
    assert (answer.status, answer.body["code"]) == (413, "body_too_large")
    assert _grew_by_one(before, _rejected(api, "body_too_large"))

    # The limit itself is allowed: the body is read and its report looked at.
    report = orjson.dumps([{"event_id": "ev-x", "reporter_id": "u1", "kind": "false_positive"}])
    with httpx.Client(base_url=api.server.base_url, timeout=STALL_GUARD_S) as client:
        at_limit = client.post("/v1/reports", content=report.ljust(CAP), headers=auth)
        assert at_limit.status_code == 404, at_limit.text
        assert at_limit.json()["results"][0]["code"] == "unknown_event"
        over = client.post("/v1/reports", content=report.ljust(CAP + 1), headers=auth)
        assert (over.status_code, over.json()["code"]) == (413, "body_too_large")


def test_an_authenticated_million_item_batch_counts_once(topics: Settings) -> None:
    # Under the default limit: the body is read and parsed, and refused as a whole.
    key = tenant_key(topics, "acme")
    with serve_api(topics) as server:
        api = Api(server, key)
        before = _rejected(api, "batch_too_large")
        with httpx.Client(base_url=server.base_url, timeout=STALL_GUARD_S) as client:
            answer = client.post(
                "/v1/reports", content=ZEROS, headers={"Authorization": f"Bearer {key}"}
            )
        assert answer.status_code == 413, answer.text
        assert answer.json()["code"] == "batch_too_large"
        assert "1000000 reports" in answer.json()["detail"]
        assert _grew_by_one(before, _rejected(api, "batch_too_large"))


def test_identifiers_with_invisible_characters_are_refused_naming_the_field(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.key}"}
    report = {"event_id": "ev-1", "reporter_id": "u1", "kind": "false_positive"}
    with httpx.Client(base_url=api.server.base_url, timeout=STALL_GUARD_S) as client:
        for field, value, named in (
            ("reporter_id", "u\u200b1", "U+200B"),
            ("event_id", "ev\u202e-1", "U+202E"),
            ("report_id", "r\x001", "U+0000"),
            ("reporter_id", "\ufeffu1", "U+FEFF"),
        ):
            answer = client.post("/v1/reports", json={**report, field: value}, headers=auth)
            assert answer.status_code == 400, answer.text
            result = answer.json()["results"][0]
            assert (result["code"], result["field"]) == ("invalid_field", field)
            assert named in result["detail"] and "invisible characters" in result["detail"]

        looked_up = client.get("/v1/reports/r%E2%80%8B1", headers=auth)
        assert looked_up.status_code == 400, looked_up.text
        assert looked_up.json()["field"] == "report_id"
        assert looked_up.json()["code"] == "invalid_field"


def test_unknown_paths_wrong_methods_and_bad_parameters_answer_a_code(api: Api) -> None:
    with httpx.Client(base_url=api.server.base_url, timeout=STALL_GUARD_S) as client:
        nowhere = client.get("/v1/nowhere")
        assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")
        nested = client.get("/v1/reports/a/b")
        assert (nested.status_code, nested.json()["code"]) == (404, "not_found")
        wrong = client.put("/v1/reports", content=b"{}")
        assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")
        assert "POST" in wrong.headers["allow"]
        hours = client.get("/v1/windows", params={"hours": "many"})
        assert hours.status_code == 422
        assert (hours.json()["code"], hours.json()["field"]) == ("invalid_parameter", "hours")
        limit = client.get("/v1/alerts", params={"limit": 0})
        assert (limit.status_code, limit.json()["field"]) == (422, "limit")
