"""Property-based: whatever request reaches whatever route, the API answers it.

Arbitrary methods, paths, path ids, parameters, keys, content types and bodies (random
bytes, random JSON, report-shaped objects with random values, huge and deeply nested arrays)
go to every route. The app runs in-process (httpx's ASGI transport, so that hundreds of
examples take seconds) on the real Redis and broker; the size and key checks that depend on
what a socket has sent are tried against the real HTTP server in ``test_hostile``.

The properties: never a 5xx (an exception in the app fails the example, it is not turned
into a 500 here); every 4xx on a ``/v1`` route is JSON with a ``code`` (for a report refused
by a check, in its result); and the report ledger moves by exactly what the answer says:
one rejection for a request refused whole, one per refused report otherwise, none elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2loop.api.app import create_api
from l2loop.schemas.api import ReportsAnswer
from l2loop.settings import Settings
from tests.fixtures.api import ledger_counts, tenant_key
from tests.fixtures.strategies import json_values

EXAMPLES = 500
# Small, so that generated arrays cross it; the real server's test covers the default.
CAP = 64 * 1024

Send = Callable[[httpx.Request], httpx.Response]


@contextlib.contextmanager
def in_process_api(api_settings: Settings) -> Iterator[Send]:
    """The app with its lifespan entered (real Redis client and Kafka producer), and a way
    to send it one request at a time on the loop it started on."""
    app = create_api(api_settings)
    with asyncio.Runner() as runner:
        lifespan = app.router.lifespan_context(app)
        runner.run(lifespan.__aenter__())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        try:
            yield lambda request: runner.run(client.send(request))
        finally:
            runner.run(client.aclose())
            runner.run(lifespan.__aexit__(None, None, None))


invisible = st.sampled_from(["\u200b", "\u202e", "\ufeff", "\x00", " ", "\u2028", "\ue000"])
identifier_like = st.one_of(
    st.text(max_size=12),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=4), invisible, st.text(max_size=4)),
    st.sampled_from(["ev-1", "u1", "r-1", "a" * 257]),
)
short_ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8)
# Reports a client could mean: most pass the field checks and meet the admission checks
# (unknown events; missed attacks are admitted and published).
plausible_report = st.fixed_dictionaries(
    {
        "event_id": short_ids,
        "reporter_id": short_ids,
        "kind": st.sampled_from(["false_positive", "confirmed_threat"]),
    },
    optional={"report_id": short_ids, "tenant_id": st.just("acme"), "comment": st.text()},
) | st.fixed_dictionaries(
    {
        "event_id": short_ids,
        "reporter_id": short_ids,
        "kind": st.just("false_negative"),
        "reason": st.sampled_from(["PI", "JB", "CMD"]),
        "text": st.text(min_size=1, max_size=200),
        "event_ts": st.just("2026-11-23T10:00:00Z"),
    }
)
report_shaped = st.fixed_dictionaries(
    {
        "event_id": identifier_like | json_values,
        "reporter_id": identifier_like | json_values,
        "kind": st.sampled_from(["false_positive", "false_negative", "confirmed_threat", "x"])
        | json_values,
    },
    optional={
        "report_id": identifier_like | json_values,
        "tenant_id": st.sampled_from(["acme", "globex"]) | identifier_like,
        "reason": st.sampled_from(["PI", "JB", "CMD", "typo"]) | json_values,
        "comment": st.text(max_size=30) | json_values,
        "text": st.text(max_size=60) | json_values,
        "event_ts": st.sampled_from(["2026-11-23T10:00:00Z", "9999-12-31T23:59:59Z", "x"])
        | json_values,
        "reported_at": json_values,
        "unexpected": json_values,
    },
)


def _dumps(value: Any) -> bytes:
    # json, not orjson: it writes integers of any size, and lone surrogates as escapes.
    return json.dumps(value).encode()


def _zeros(count: int) -> bytes:
    return b"[" + b",".join([b"0"] * count) + b"]"


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=512),
    json_values.map(_dumps),
    report_shaped.map(_dumps),
    st.lists(report_shaped | json_values, max_size=8).map(_dumps),
    plausible_report.map(_dumps),
    st.lists(plausible_report | report_shaped, min_size=1, max_size=8).map(_dumps),
    # Around the batch limit (500 in these settings) and past the body limit.
    st.sampled_from([0, 1, 499, 500, 501, 10_000, 40_000]).map(_zeros),
    # orjson refuses nesting deeper than 1024; a body nested deeper must still be answered.
    st.sampled_from([1, 100, 1023, 1024, 1025, 20_000]).map(lambda d: b"[" * d + b"]" * d),
    st.sampled_from([b"{}", b"[]", b"[{}]", b"null", b"[null]", b"\xef\xbb\xbf[]", b"[1e400]"]),
)

ROUTES = [
    "/v1/reports",
    "/v1/windows",
    "/v1/alerts",
    "/v1/rollout",
    "/healthz",
    "/metrics",
    "/metrics/",
    "/",
    "/openapi.json",
    "/static/uPlot.iife.min.js",
    "/static/rollout.js",
]
report_ids = st.one_of(st.text(max_size=300), identifier_like, st.sampled_from(["r-1", "..", "%"]))
paths = st.one_of(
    st.sampled_from(ROUTES),
    st.sampled_from(ROUTES),
    st.sampled_from(ROUTES),
    report_ids.map(lambda report_id: "/v1/reports/" + quote(report_id, safe="")),
    report_ids.map(lambda report_id: "/v1/reports/" + quote(report_id, safe="")),
    st.text(max_size=20).map(lambda rest: "/v1/" + quote(rest, safe="/")),
    st.text(max_size=20).map(lambda rest: "/static/" + quote(rest, safe="/.")),
)
parameters = st.dictionaries(
    st.sampled_from(["hours", "limit", "x"]),
    st.integers(min_value=-(2**40), max_value=2**40).map(str) | st.text(max_size=8),
    max_size=2,
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/octet-stream",
        "}{ nonsense",
    ]
)
methods = st.sampled_from(["GET", "GET", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


def _has_code(path: str, method: str, body: Any) -> bool:
    if isinstance(body, dict) and isinstance(body.get("code"), str) and body["code"]:
        return True
    if (path, method) != ("/v1/reports", "POST"):
        return False
    # Reports refused by a check: each result names its code.
    answer = ReportsAnswer.model_validate(body)
    return all(result.code for result in answer.results if result.status != 202)


@dataclass(frozen=True)
class Hostile:
    """Sends one request to the in-process API and checks the properties on its answer."""

    settings: Settings
    key: str
    send: Send

    def keys(self) -> st.SearchStrategy[str]:
        return st.sampled_from([f"Bearer {self.key}", f"bearer  {self.key} "])

    @staticmethod
    def not_keys() -> st.SearchStrategy[str | None]:
        return st.sampled_from([None, "Bearer l2k_nope", "Basic x", "Bearer "]) | st.text(
            alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30
        )

    def rejected(self) -> int:
        counts = ledger_counts(self.settings)
        return sum(n for name, n in counts.items() if name.startswith("rejected:"))

    def check(
        self,
        method: str,
        path: str,
        body: bytes,
        *,
        query: dict[str, str] | None = None,
        authorization: str | None = None,
        content_type: str | None = None,
    ) -> int:
        headers = {"authorization": authorization, "content-type": content_type}
        request = httpx.Request(
            method,
            f"http://api{path}",
            params=query,
            headers={name: value for name, value in headers.items() if value is not None},
            content=body,
        )
        before = self.rejected()
        response = self.send(request)
        moved = self.rejected() - before
        status = response.status_code
        assert status < 500, (status, response.text[:500])
        decoded: Any = None
        if response.headers.get("content-type", "").startswith("application/json"):
            decoded = orjson.loads(response.content)
        if 400 <= status < 500 and path.startswith("/v1"):
            assert _has_code(path, method, decoded), (status, response.text[:500])
        if (path, method) != ("/v1/reports", "POST"):
            assert moved == 0, (path, method, moved)
        elif isinstance(decoded, dict) and "code" in decoded:
            # Refused whole: one count, whatever the body held.
            assert moved == 1, (status, decoded)
        else:
            assert moved == ReportsAnswer.model_validate(decoded).rejected, decoded
        return status


@pytest.fixture
def hostile(topics: Settings) -> Iterator[Hostile]:
    api_settings = topics.model_copy(update={"api_max_body_bytes": CAP, "report_batch_max": 500})
    key = tenant_key(api_settings, "acme")
    with in_process_api(api_settings) as send:
        yield Hostile(api_settings, key, send)


PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_any_body_posted_with_a_key_is_answered_and_counted_as_answered(
    hostile: Hostile,
) -> None:
    @PROPERTY_SETTINGS
    @given(authorization=hostile.keys(), content_type=content_types, body=bodies)
    def answered(authorization: str, content_type: str | None, body: bytes) -> None:
        hostile.check(
            "POST", "/v1/reports", body, authorization=authorization, content_type=content_type
        )

    answered()


def test_any_body_posted_without_a_valid_key_gets_401_whatever_it_holds(hostile: Hostile) -> None:
    @PROPERTY_SETTINGS
    @given(authorization=Hostile.not_keys(), body=bodies)
    def refused(authorization: str | None, body: bytes) -> None:
        status = hostile.check("POST", "/v1/reports", body, authorization=authorization)
        assert status == 401

    refused()


def test_any_request_to_any_route_is_answered_without_a_server_error(hostile: Hostile) -> None:
    @PROPERTY_SETTINGS
    @given(
        method=methods,
        path=paths,
        query=parameters,
        authorization=hostile.keys() | Hostile.not_keys(),
        content_type=content_types,
        body=bodies,
    )
    def answered(
        method: str,
        path: str,
        query: dict[str, str],
        authorization: str | None,
        content_type: str | None,
        body: bytes,
    ) -> None:
        hostile.check(
            method,
            path,
            body,
            query=query,
            authorization=authorization,
            content_type=content_type,
        )

    answered()
