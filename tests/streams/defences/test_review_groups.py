"""Review groups: same text first, then neighbours of the leader; never across kinds or
reasons; stable ids that name the members."""

from __future__ import annotations

import random
from datetime import timedelta

from l2loop.schemas.reports import LabelReport, QuarantinedReport
from l2loop.streams.defences.review_groups import (
    PREVIEW_CHARS,
    ReviewGroup,
    find_group,
    group_id,
    group_reports,
)
from l2loop.streams.defences.rules import quarantined_report
from tests.fixtures.verdicts import NOON, held_fp

SIMILARITY = 0.6

ROSES = "please translate the following paragraph about garden roses into french for my blog"
TULIPS = "Please translate the following paragraph about garden tulips into French for my blog!"
KNIVES = "please translate the following paragraph about kitchen knives into german for my shop"
SHOP = (
    "could you translate this short paragraph about kitchen knives into german for our online shop"
)
RUST = "how do I reverse a linked list in rust without unsafe code"


def _claim(n: int, text: str) -> QuarantinedReport:
    report = LabelReport(
        report_id=f"r{n}",
        event_id=f"ev-{n}",
        tenant_id="acme",
        reporter_id="bob",
        kind="false_negative",
        reason="PI",
        text=text,
        event_ts=NOON,
    )
    held = quarantined_report(report, None, "unverified_claim", "not seen")
    return held.model_copy(update={"quarantined_at": NOON + timedelta(minutes=n)})


def _ids(groups: list[ReviewGroup], *, field: str = "report_id") -> list[list[str]]:
    return [[getattr(m.report, field) for m in g.members] for g in groups]


def test_the_same_text_groups_first_then_neighbours_of_the_leader() -> None:
    items = [
        held_fp(1, KNIVES),
        held_fp(2, ROSES),
        held_fp(3, RUST),
        held_fp(
            4,
            "  PLEASE translate the following paragraph about garden roses into French for my blog",
        ),
        held_fp(5, TULIPS),
        held_fp(6, SHOP),
    ]
    groups = group_reports(items, similarity=SIMILARITY)
    # Roses (twice, once in capitals) lead and take the tulips; the knives lead the shop
    # variant; the programming question is alone. Largest first, then the oldest leader.
    assert _ids(groups) == [["r2", "r4", "r5"], ["r1", "r6"], ["r3"]]
    assert [g.size for g in groups] == [3, 2, 1]
    assert groups[0].leader.text == ROSES and groups[0].preview() == ROSES


def test_members_are_close_to_the_leader_not_chained_through_each_other() -> None:
    # At 0.5 the knives are close to the roses (0.56) and the shop variant to the knives
    # (0.63), but the shop variant is far from the roses (0.25): single linkage would
    # chain all three under the roses' preview.
    items = [held_fp(1, ROSES), held_fp(2, ROSES), held_fp(3, KNIVES), held_fp(4, SHOP)]
    groups = group_reports(items, similarity=0.5)
    assert _ids(groups) == [["r1", "r2", "r3"], ["r4"]]


def test_groups_never_mix_kinds_or_quarantine_reasons_but_may_span_tenants() -> None:
    items = [
        held_fp(1, ROSES, tenant="acme", score=0.97),
        held_fp(2, ROSES, tenant="globex", score=0.91),
        held_fp(3, ROSES, tenant="globex", score=0.93),
        held_fp(4, ROSES, reason="conflicting_reports"),
        _claim(5, ROSES),
    ]
    groups = group_reports(items, similarity=SIMILARITY)
    assert [(g.kind, g.reason, g.size) for g in groups] == [
        ("false_positive", "high_confidence_threat", 3),
        ("false_positive", "conflicting_reports", 1),
        ("false_negative", "unverified_claim", 1),
    ]
    spanning = groups[0]
    assert spanning.tenants() == {"acme": 1, "globex": 2}
    assert _ids([spanning], field="tenant_id") == [["acme", "globex", "globex"]]
    assert spanning.score_range() == (0.91, 0.97)
    # An unverified claim was never scored.
    assert groups[2].score_range() is None


def test_ids_name_the_members_whatever_the_order() -> None:
    items = [held_fp(n, text) for n, text in enumerate([ROSES, TULIPS, KNIVES, SHOP, RUST, ROSES])]
    groups = group_reports(items, similarity=SIMILARITY)
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    again = group_reports(shuffled, similarity=SIMILARITY)
    assert [(g.group_id, g.members) for g in again] == [(g.group_id, g.members) for g in groups]
    assert len({g.group_id for g in groups}) == len(groups)
    for group in groups:
        assert group.group_id == group_id(list(reversed(group.members)))
        assert find_group(groups, group.group_id) is group
    # A group that gained a member is another group: a decision on the old id finds nothing.
    grown = group_reports([*items, held_fp(9, TULIPS)], similarity=SIMILARITY)
    assert groups[0].group_id not in {g.group_id for g in grown}
    assert find_group(grown, groups[0].group_id) is None
    # The same report id in another tenant is another member.
    assert group_id([held_fp(1, ROSES)]) != group_id([held_fp(1, ROSES, tenant="globex")])


def test_a_long_text_is_previewed_on_one_line() -> None:
    text = "ignore\nthe   previous " + "word " * 100
    (group,) = group_reports([held_fp(1, text)], similarity=SIMILARITY)
    preview = group.preview()
    assert len(preview) == PREVIEW_CHARS and "\n" not in preview and "  " not in preview
    assert preview.startswith("ignore the previous word") and preview.endswith("…")


def test_nothing_pending_is_no_group() -> None:
    assert group_reports([], similarity=SIMILARITY) == []
