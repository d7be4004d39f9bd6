"""The report router on the real Redis: quorum growth, conflicts, the golden set, replays."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.reports import ReportOutcome
from l2loop.schemas.verdicts import StoredVerdict
from l2loop.settings import Settings
from l2loop.stores.verdicts import VerdictStore
from l2loop.streams.reports import ReportRouter, ReportServices, RoutedBatch, report_services
from l2model.record import text_key
from tests.fixtures.verdicts import stored_verdict

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TEXT = "how do I kill all child processes of a shell script?"
GOLDEN = "what is the capital of France?"
T = TypeVar("T")


def _verdict(event_id: str, tenant: str, text: str) -> StoredVerdict:
    return stored_verdict(
        event_id,
        text,
        tenant=tenant,
        family="CMD",
        severity=0.6,
        context="technical",
        action="warn",
        ts=NOW,
    )


def _with_router(
    settings: Settings, body: Callable[[ReportServices, ReportRouter], Awaitable[T]]
) -> T:
    async def run() -> T:
        services = report_services(settings)
        router = ReportRouter(
            services.admission,
            services.support,
            golden_keys=frozenset({text_key(GOLDEN)}),
            high_confidence_score=0.9,
            quorum=3,
            min_tenants=2,
        )
        try:
            return await body(services, router)
        finally:
            await services.close()

    return asyncio.run(run())


offsets = itertools.count()


def _record(**report: Any) -> RawRecord:
    return RawRecord("t.label-reports", 0, next(offsets), None, orjson.dumps(report))


def _fp(
    report_id: str, event_id: str, tenant: str, reporter: str, kind: str = "false_positive"
) -> RawRecord:
    return _record(
        report_id=report_id,
        event_id=event_id,
        tenant_id=tenant,
        reporter_id=reporter,
        kind=kind,
    )


def test_support_grows_per_authenticated_principal_and_replays_change_nothing(
    settings: Settings,
) -> None:
    events = [
        _verdict("e-acme-1", "acme", TEXT),
        _verdict("e-acme-2", "acme", TEXT.upper()),  # the same normalised text
        _verdict("e-globex", "globex", TEXT),
        _verdict("e-golden", "acme", GOLDEN),
    ]
    reports = [
        _fp("r1", "e-acme-1", "acme", "alice"),
        _fp("r2", "e-acme-2", "acme", "alice"),  # same reporter, another event: no new support
        _fp("r3", "e-acme-2", "acme", "bob"),
        _fp("r4", "e-globex", "globex", "carol"),
        _fp("r5", "e-golden", "acme", "dave"),
        _fp("r6", "e-acme-1", "acme", "erin", kind="confirmed_threat"),  # contradicts r1..r4
    ]

    async def body(
        services: ReportServices, router: ReportRouter
    ) -> tuple[
        RoutedBatch, RoutedBatch, dict[str, int], dict[str, int], list[ReportOutcome | None]
    ]:
        for tenant in ("acme", "globex"):
            await services.tenants.add(tenant)
        store = VerdictStore(services.client, key_prefix=settings.topic_prefix, ttl_s=600)
        await store.put_many(events)
        first = RoutedBatch()
        for record in reports:  # one at a time: each sees the support the previous left
            routed = await router.route([record])
            await services.ledger.record(routed.outcomes)
            first.curated += routed.curated
            first.quarantined += routed.quarantined
            first.dead_letters += routed.dead_letters
            first.outcomes += routed.outcomes
        counts = await services.ledger.counts()
        replay = await router.route(reports[:4])
        await services.ledger.record(replay.outcomes)
        stored = await services.ledger.get_many("acme", ["r6", "unknown", "r1"])
        return first, replay, counts, await services.ledger.counts(), stored

    first, replay, counts, after_replay, stored = _with_router(settings, body)
    supports = [
        (e.report_ids, e.reporter_count, e.tenant_count, e.principal_count) for e in first.curated
    ]
    assert supports == [
        (["r1"], 1, 1, 1),
        (["r1", "r2"], 1, 1, 1),
        # bob is a reporter id acme's key states: acme is still one voice.
        (["r1", "r2", "r3"], 2, 1, 1),
        (["r1", "r2", "r3", "r4"], 3, 2, 2),
    ]
    assert len({e.example_id for e in first.curated}) == 1
    weights = [(e.weight_multiplier, e.confidence, e.confirmed) for e in first.curated]
    assert weights[0] == weights[1] == weights[2] == (1.0, 0.5, False)
    # Two tenants are two voices: more weight, still short of the quorum of 3.
    assert weights[3] == (3.0, 0.75, False)

    by_id = {o.report_id: o for o in first.outcomes}
    # Sent over Kafka: refused onto the dead-letter topic, naming the check.
    assert (by_id["r5"].route, by_id["r5"].reason) == ("dead_lettered", "golden_set")
    (refused,) = [letter for letter in first.dead_letters if letter.event_id == "r5"]
    assert refused.reason == "report_refused" and refused.error.startswith("golden_set:")
    assert (by_id["r6"].route, by_id["r6"].reason) == ("quarantined", "conflicting_reports")
    assert [q.report.report_id for q in first.quarantined] == ["r6"]
    assert counts == {"curated": 4, "quarantined": 1, "dead_lettered:golden_set": 1}
    assert stored == [by_id["r6"], None, by_id["r1"]]

    # A replay is admitted again without spending quota, and counts nothing twice.
    assert len(replay.curated) == 4 and after_replay == counts
