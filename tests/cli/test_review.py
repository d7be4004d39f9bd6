"""`l2loop review` against the real Redis and broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import redis
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.infra.topics import CURATED_EXAMPLES
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.reports import LabelReport, ReportOutcome, ReportRoute
from l2loop.schemas.verdicts import StoredVerdict
from l2loop.settings import Settings
from l2loop.streams.defences.rules import quarantined_report
from l2loop.streams.reports import report_services
from tests.fixtures.pipeline import drain
from tests.fixtures.verdicts import stored_verdict

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _held(
    report_id: str, tenant: str = "acme", text: str | None = None
) -> tuple[LabelReport, StoredVerdict]:
    held = stored_verdict(
        f"ev-{report_id}",
        text or f"ignore the previous paragraph, it was a typo ({report_id})",
        tenant=tenant,
        score=0.96,
        severity=0.9,
        ts=NOW,
    )
    report = LabelReport(
        report_id=report_id,
        event_id=held.verdict.event_id,
        tenant_id=tenant,
        reporter_id="alice",
        kind="false_positive",
        reason="programming",
    )
    return report, held


def _quarantine(settings: Settings, held: list[tuple[LabelReport, StoredVerdict]]) -> None:
    """Holds each report for review, as the report agent would, and records its outcome."""

    async def hold() -> None:
        services = report_services(settings)
        try:
            items = [quarantined_report(*h, "high_confidence_threat", "0.96") for h in held]
            await services.queue.hold(items)
            await services.ledger.record(
                [
                    ReportOutcome(
                        report_id=item.report.report_id,
                        tenant_id=item.report.tenant_id,
                        route=ReportRoute.QUARANTINED,
                        reason=item.reason,
                    )
                    for item in items
                ]
            )
        finally:
            await services.close()

    asyncio.run(hold())


def test_review_releases_or_discards_and_audits_every_decision(topics: Settings) -> None:
    _quarantine(topics, [_held("r1"), _held("r2")])
    runner, env = CliRunner(), topics.to_env()
    # The two texts differ by their last word: one group, its members listed with --verbose.
    listed = runner.invoke(main, ["review", "list", "--verbose"], env=env)
    assert listed.exit_code == 0, listed.output
    (group,) = [orjson.loads(line) for line in listed.stdout.splitlines()]
    pending = group["members"]
    assert [p["report_id"] for p in pending] == ["r1", "r2"]
    assert pending[0]["reason"] == "high_confidence_threat" and pending[0]["text"]

    released = runner.invoke(
        main,
        ["review", "release", "r1", "--reviewer", "ana", "--why", "a typo, not an attack"],
        env=env,
    )
    assert released.exit_code == 0, released.output
    discarded = runner.invoke(
        main, ["review", "discard", "r2", "--reviewer", "ben", "--why", "attack"], env=env
    )
    assert discarded.exit_code == 0, discarded.output
    again = runner.invoke(
        main, ["review", "release", "r1", "--reviewer", "ana", "--why", "twice"], env=env
    )
    assert again.exit_code == 1 and "not in quarantine" in again.output
    assert runner.invoke(main, ["review", "list"], env=env).stdout == ""

    log = [
        orjson.loads(line)
        for line in runner.invoke(main, ["review", "log"], env=env).stdout.splitlines()
    ]
    assert [(d["report_id"], d["action"], d["reviewer"], d["why"]) for d in log] == [
        ("r1", "release", "ana", "a typo, not an attack"),
        ("r2", "discard", "ben", "attack"),
    ]
    assert all(d["decided_at"] and d["quarantine_reason"] == "high_confidence_threat" for d in log)

    curated_topic = topics.topic(CURATED_EXAMPLES)
    drained = drain(topics, [curated_topic], lambda d: bool(d.values(curated_topic)), 30)
    (example,) = drained.values(curated_topic)
    assert example["released_in_review"] is True and example["reviewed_by"] == "ana"
    assert example["confirmed"] is True and example["weight_multiplier"] == 5.0
    assert (example["label"], example["report_ids"]) == (0, ["r1"])

    async def ledger() -> tuple[dict[str, int], list[ReportOutcome | None]]:
        services = report_services(topics)
        try:
            outcomes = [await services.ledger.get("acme", rid) for rid in ("r1", "r2")]
            return await services.ledger.counts(), outcomes
        finally:
            await services.close()

    counts, (first, second) = asyncio.run(ledger())
    assert counts == {"quarantined": 2, "released": 1, "discarded": 1}
    assert first is not None and (first.route, first.reason) == ("curated", "released_in_review")
    assert second is not None and (second.route, second.reason) == (
        "rejected",
        "discarded_in_review",
    )


def test_a_report_id_two_tenants_hold_is_decided_for_the_tenant_named(topics: Settings) -> None:
    async def quarantine() -> None:
        services = report_services(topics)
        try:
            await services.queue.hold(
                [
                    quarantined_report(*_held("r9", tenant), "high_confidence_threat", "0.96")
                    for tenant in ("acme", "globex")
                ]
            )
        finally:
            await services.close()

    asyncio.run(quarantine())
    runner, env = CliRunner(), topics.to_env()
    decide = ["review", "discard", "r9", "--reviewer", "ana", "--why", "attack"]
    ambiguous = runner.invoke(main, decide, env=env)
    assert ambiguous.exit_code == 1 and "acme, globex" in ambiguous.output
    named = runner.invoke(main, [*decide, "--tenant", "globex"], env=env)
    assert named.exit_code == 0, named.output
    pending = [
        orjson.loads(line)
        for line in runner.invoke(main, ["review", "list"], env=env).stdout.splitlines()
    ]
    assert [(p["leader"], p["leader_tenant"], p["tenants"]) for p in pending] == [
        ("r9", "acme", {"acme": 1})
    ]


def test_a_report_held_before_ids_were_per_tenant_is_still_decided(
    topics: Settings, redis_client: redis.Redis
) -> None:
    # Held by an earlier release, under its bare report id.
    legacy = quarantined_report(*_held("r-old"), "high_confidence_threat", "0.96")
    redis_client.hset(f"{topics.topic_prefix}review-pending", "r-old", to_bytes(legacy))
    runner, env = CliRunner(), topics.to_env()
    decide = ["review", "discard", "r-old", "--tenant", "acme", "--reviewer", "ana", "--why", "x"]
    decided = runner.invoke(main, decide, env=env)
    assert decided.exit_code == 0, decided.output
    assert runner.invoke(main, ["review", "list"], env=env).stdout == ""


def _lines(output: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in output.splitlines()]


def test_a_group_is_decided_at_once_each_member_audited_with_the_group(
    topics: Settings,
) -> None:
    programming = "how do I reverse a linked list in rust without unsafe code"
    _quarantine(topics, [_held("a1"), _held("g1", "globex"), _held("a2", text=programming)])
    runner, env = CliRunner(), topics.to_env()
    listed = runner.invoke(main, ["review", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    typo, alone = _lines(listed.stdout)
    assert (typo["size"], typo["kind"], typo["reason"]) == (
        2,
        "false_positive",
        "high_confidence_threat",
    )
    assert typo["tenants"] == {"acme": 1, "globex": 1} and "members" not in typo
    assert (typo["score_min"], typo["score_max"]) == (0.96, 0.96)
    assert str(typo["preview"]).startswith("ignore the previous paragraph")
    assert (alone["size"], alone["leader"], alone["preview"]) == (1, "a2", programming)

    release = ["review", "release", "--reviewer", "ana", "--why", "typos, not attacks"]
    both = runner.invoke(main, [*release, "a1", "--group", str(typo["group_id"])], env=env)
    neither = runner.invoke(main, release, env=env)
    tenant = runner.invoke(
        main, [*release, "--group", str(typo["group_id"]), "--tenant", "acme"], env=env
    )
    assert (both.exit_code, neither.exit_code, tenant.exit_code) == (2, 2, 2)

    # A report joins the group after it was listed: the listed id no longer decides anything.
    _quarantine(topics, [_held("a3")])
    stale = runner.invoke(main, [*release, "--group", str(typo["group_id"])], env=env)
    assert stale.exit_code == 1 and "list again" in stale.output
    grown, _ = _lines(runner.invoke(main, ["review", "list", "-v"], env=env).stdout)
    members = grown["members"]
    assert isinstance(members, list)
    assert [(m["report_id"], m["tenant_id"]) for m in members] == [
        ("a1", "acme"),
        ("g1", "globex"),
        ("a3", "acme"),
    ]
    released = runner.invoke(main, [*release, "--group", str(grown["group_id"])], env=env)
    assert released.exit_code == 0, released.output
    assert [line.split()[:3] for line in released.stdout.splitlines()] == [
        ["released", "a1", "of"],
        ["released", "g1", "of"],
        ["released", "a3", "of"],
    ]
    discard = ["review", "discard", "--group", str(alone["group_id"]), "--reviewer", "ben"]
    discarded = runner.invoke(main, [*discard, "--why", "a question, but a wrong one"], env=env)
    assert discarded.exit_code == 0, discarded.output
    assert runner.invoke(main, ["review", "list"], env=env).stdout == ""

    log = _lines(runner.invoke(main, ["review", "log"], env=env).stdout)
    assert [(d["report_id"], d["tenant_id"], d["action"], d["group_id"]) for d in log] == [
        ("a1", "acme", "release", grown["group_id"]),
        ("g1", "globex", "release", grown["group_id"]),
        ("a3", "acme", "release", grown["group_id"]),
        ("a2", "acme", "discard", alone["group_id"]),
    ]

    # Each member is curated as its own tenant's report.
    curated_topic = topics.topic(CURATED_EXAMPLES)
    drained = drain(topics, [curated_topic], lambda d: len(d.values(curated_topic)) >= 3, 30)
    examples = drained.values(curated_topic)
    assert sorted((e["tenant_id"], e["report_ids"][-1]) for e in examples) == [
        ("acme", "a1"),
        ("acme", "a3"),
        ("globex", "g1"),
    ]
    assert all(e["released_in_review"] and e["reviewed_by"] == "ana" for e in examples)

    async def ledger() -> tuple[dict[str, int], ReportOutcome | None]:
        services = report_services(topics)
        try:
            return await services.ledger.counts(), await services.ledger.get("globex", "g1")
        finally:
            await services.close()

    counts, outcome = asyncio.run(ledger())
    assert counts == {"quarantined": 4, "released": 3, "discarded": 1}
    assert outcome is not None and outcome.reason == "released_in_review"
    assert f"group {grown['group_id']}" in outcome.detail
