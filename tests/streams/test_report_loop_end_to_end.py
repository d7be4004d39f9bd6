"""Fast relief, end to end, the way users get it: prompts the model wrongly flags, reported
as false positives over the real HTTP API, become curated examples in the durable store, and
those backed by a quorum of the tenant's reporters become suppressions, so that the same
prompts sent again are allowed. Real broker, Redis, API and ``l2loop worker``; nothing
produced by hand on an internal topic."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from l2loop.infra.clients import produce_lines
from l2loop.infra.topics import SCAN_EVENTS, SCAN_VERDICTS
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.tenants import TenantKeys
from l2model.record import text_key
from l2model.storage import LocalStorage
from tests.fixtures.api import serve_api
from tests.fixtures.curated import programming_questions, stored_lines
from tests.fixtures.models import MakeModel
from tests.fixtures.pipeline import WorkerProcess, drain, wait_for

TENANT = "acme"
CONFIRMED = 60  # questions reported by three distinct users: the quorum
QUORUM = 3
# Ten users share the reporting, each well inside the per-reporter quota.
USERS = tuple(f"user-{n}" for n in range(10))


def reporters_of(question: int) -> tuple[str, ...]:
    count = QUORUM if question < CONFIRMED else 1
    return tuple(USERS[(question + k) % len(USERS)] for k in range(count))


def scan_events(prefix: str, texts: list[str]) -> list[bytes]:
    now = int(time.time() * 1000)
    return [
        orjson.dumps({"event_id": f"{prefix}-{i}", "ts": now, "tenant_id": TENANT, "text": text})
        for i, text in enumerate(texts)
    ]


def verdicts_of(settings: Settings, prefix: str, count: int) -> dict[str, dict[str, object]]:
    topic = settings.topic(SCAN_VERDICTS)

    def mine(drained_values: list[dict[str, object]]) -> dict[str, dict[str, object]]:
        return {
            str(v["event_id"]): v for v in drained_values if str(v["event_id"]).startswith(prefix)
        }

    drained = drain(settings, [topic], lambda d: len(mine(d.values(topic))) >= count)
    return mine(drained.values(topic))


async def add_tenant(settings: Settings) -> str:
    client = aioredis.Redis.from_url(settings.redis_dsn)
    try:
        return await TenantKeys(client, key_prefix=settings.topic_prefix).add(TENANT)
    finally:
        await client.aclose()


async def active_suppressions(settings: Settings) -> int:
    client = aioredis.Redis.from_url(settings.redis_dsn)
    try:
        return len(await SuppressionStore(client, key_prefix=settings.topic_prefix).active(TENANT))
    finally:
        await client.aclose()


@pytest.mark.timeout(300)
def test_reported_false_positives_are_curated_and_a_quorum_relieves_the_tenant(
    topics: Settings, make_model_dir: MakeModel
) -> None:
    # A strict model flags every one of these benign questions: the false positives to fix.
    settings = topics.model_copy(
        update={
            "model_dir": make_model_dir("1.0.0", threshold=0.0001),
            "suppression_quorum": QUORUM,
        }
    )
    questions = programming_questions()
    key = asyncio.run(add_tenant(settings))
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        asyncio.run(
            produce_lines(settings, settings.topic(SCAN_EVENTS), scan_events("q", questions))
        )
        first = verdicts_of(settings, "q-", len(questions))
        assert all(v["is_threat"] and not v["suppressed"] for v in first.values())

        with serve_api(settings) as api, httpx.Client(base_url=api.base_url) as client:
            for i in range(len(questions)):
                for reporter in reporters_of(i):
                    answer = client.post(
                        "/v1/reports",
                        headers={"Authorization": f"Bearer {key}"},
                        json={
                            "event_id": f"q-{i}",
                            "reporter_id": reporter,
                            "kind": "false_positive",
                            "reason": "programming",
                        },
                    )
                    assert answer.status_code == 202, answer.text

        store = CuratedStore(LocalStorage(settings.data_dir))

        def latest() -> dict[str, dict[str, object]]:
            by_example: dict[str, dict[str, object]] = {}
            for line in stored_lines(store):
                record = orjson.loads(line)
                # the latest revision: the greatest curated_at
                known = by_example.get(record["example_id"], record)
                if record["curated_at"] >= known["curated_at"]:  # type: ignore[operator]
                    by_example[record["example_id"]] = record
            return by_example

        wait_for(
            "every example at its final support",
            lambda: (
                sum(int(r["reporter_count"]) for r in latest().values())
                == CONFIRMED * QUORUM + len(questions) - CONFIRMED
            ),
            worker,
            120,
        )
        examples = latest()
        assert set(examples) == {text_key(q) for q in questions}
        for question in questions:
            example = examples[text_key(question)]
            assert example["label"] == 0 and example["family"] == "benign"
            assert example["sub_category"] == "programming"
            # One key is one voice (decision 0018): a quorum of the reporters its key states
            # relieves the tenant, and teaches at bulk weight, never production-confirmed.
            assert (example["weight_multiplier"], example["confirmed"]) == (1.0, False)
        wait_for(
            "the confirmed ones to become suppressions",
            lambda: asyncio.run(active_suppressions(settings)) == CONFIRMED,
            worker,
            60,
        )

        asyncio.run(
            produce_lines(settings, settings.topic(SCAN_EVENTS), scan_events("again", questions))
        )
        again = verdicts_of(settings, "again-", len(questions))
    finally:
        worker.stop()

    for i in range(len(questions)):
        verdict, before = again[f"again-{i}"], first[f"q-{i}"]
        assert verdict["score"] == pytest.approx(before["score"], abs=1e-3)  # the model's own
        if i < CONFIRMED:
            assert (verdict["action"], verdict["suppressed"]) == ("allow", True)
        else:
            assert verdict["action"] != "allow" and verdict["suppressed"] is False
