"""Window logic over an in-memory state: no broker, no Redis."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from l2loop.resilience import Backoff
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.dead_letters import DeadLetterReason
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.windows import WindowStats
from l2loop.streams.window_state import WindowConfig
from l2loop.streams.windows import WindowAggregator
from tests.fixtures.window_records import (
    CONFIG,
    HOUR_MS,
    TOPICS,
    MemoryWindowState,
    at,
    dead_letter,
    label,
    raw,
    verdict,
    verdict_records,
)


class Harness:
    def __init__(self, config: WindowConfig = CONFIG) -> None:
        self.state = MemoryWindowState()
        self.aggregator = WindowAggregator(self.state, config, TOPICS, Backoff())

    def apply(self, records: Sequence[RawRecord]) -> list[WindowStats]:
        return asyncio.run(self.aggregator.apply(records))

    def window(self, hours: float, version: str = "1.0.0") -> WindowStats:
        start = int(at(hours).timestamp())
        return self.state.latest[f"{start - start % 3600}|{version}"]


def test_tumbling_windows_split_at_the_hour() -> None:
    h = Harness()
    h.apply(
        verdict_records(
            [
                verdict("a", at(10)),
                verdict("b", at(10) + timedelta(minutes=59, seconds=59, milliseconds=999)),
                verdict("c", at(11), flagged=True),
            ]
        )
    )
    first, second = h.window(10), h.window(11)
    assert (first.events, second.events, second.flagged) == (2, 1, 1)
    assert first.window_start == at(10) and first.window_end == at(11)
    assert set(h.state.latest) == {
        f"{int(at(10).timestamp())}|1.0.0",
        f"{int(at(11).timestamp())}|1.0.0",
    }


def test_canaries_are_not_production_traffic() -> None:
    h = Harness()
    h.apply(
        verdict_records(
            [
                verdict("p1", at(3)),
                verdict("p2", at(3), flagged=True),
                verdict("c1", at(3), truth=0, flagged=True),  # FP
                verdict("c2", at(3), truth=0),
                verdict("c3", at(3), truth=1, flagged=True),  # TP
                verdict("c4", at(3), truth=1),  # FN
                verdict("c5", at(3), truth=1),  # FN
                verdict("s1", at(3), flagged=True, suppressed=True),
            ]
        )
    )
    w = h.window(3)
    assert (w.events, w.flagged, w.suppressed) == (3, 1, 1)
    assert (w.canary_fp_rate.hits, w.canary_fp_rate.total) == (1, 2)
    assert (w.recall.hits, w.recall.total) == (1, 3)
    assert w.flag_rate.value == pytest.approx(1 / 3)


def test_late_event_within_grace_counts_and_re_emits() -> None:
    h = Harness()
    (first,) = h.apply(verdict_records([verdict("a", at(10))]))
    h.apply(verdict_records([verdict("b", at(30))], first=1))
    emitted = h.apply(
        verdict_records(
            [
                verdict(
                    "c",
                    at(
                        10,
                    )
                    + timedelta(minutes=5),
                )
            ],
            first=2,
        )
    )
    assert [w.window_start for w in emitted] == [at(10)]
    w = h.window(10)
    assert (w.events, w.late_events, w.revision) == (2, 1, first.revision + 1)


def test_event_older_than_grace_is_too_late() -> None:
    config = WindowConfig(size_ms=HOUR_MS, grace_ms=48 * HOUR_MS, future_allowance_ms=0)
    h = Harness(config)
    h.apply(verdict_records([verdict("a", at(100)), verdict("b", at(51)), verdict("c", at(53))]))
    assert h.state.totals == {"too_late:verdict": 1}
    assert h.window(53).events == 1 and h.window(53).late_events == 1
    assert f"{int(at(51).timestamp())}|1.0.0" not in h.state.latest


def test_future_event_is_clamped_and_closes_nothing() -> None:
    h = Harness()
    now = at(200)
    h.apply(
        verdict_records(
            [
                verdict("future", now + timedelta(days=30), scored_at=now),
                # Six days back from the scorer's clock: inside the grace as long as the
                # future event did not drag the watermark ahead.
                verdict("old", now - timedelta(days=6), scored_at=now),
            ]
        )
    )
    clamped = h.window(200)  # now + 5 minutes of allowance is still hour 200
    assert (clamped.events, clamped.clamped_future) == (1, 1)
    assert h.window(200 - 6 * 24).events == 1
    assert h.state.totals == {}


def test_label_updates_the_events_hour_not_the_labels() -> None:
    h = Harness()
    h.apply(verdict_records([verdict("e1", at(10), flagged=True), verdict("e2", at(10))]))
    before = h.window(10)
    two_days_later = at(58)
    labels = [
        raw(TOPICS.labels, 1, i, to_bytes(label("e1", at(10), two_days_later, report_id=f"r{i}")))
        for i in range(3)  # three people reported the same event: it counts once
    ] + [
        raw(
            TOPICS.labels,
            1,
            3,
            to_bytes(label("e2", at(10), two_days_later, kind="false_negative")),
        )
    ]
    emitted = h.apply(labels)
    after = h.window(10)
    assert [w.window_start for w in emitted] == [at(10)]
    assert (after.reported_fp_rate.hits, after.reported_fp_rate.total) == (1, 2)
    assert after.reported_fn == 1
    assert after.revision == before.revision + 1
    assert after.events == before.events
    assert not any(
        start.startswith(str(int(two_days_later.timestamp()))) for start in h.state.latest
    )


def test_label_older_than_grace_is_too_late() -> None:
    h = Harness()
    h.apply([raw(TOPICS.labels, 0, 0, to_bytes(label("e1", at(0), at(24 * 8))))])
    assert h.state.totals == {"too_late:label": 1}
    assert h.state.latest == {}


def test_duplicate_verdicts_and_replayed_batches_count_once() -> None:
    h = Harness()
    verdicts = [verdict(f"e{i}", at(5) + timedelta(seconds=i)) for i in range(10)]
    records = verdict_records(verdicts)
    h.apply(records)
    h.apply(records)  # the same batch again: below the mark
    h.apply(records[5:] + verdict_records(verdicts[5:], first=10))  # overlap + rescored copies
    assert h.window(5).events == 10


def test_dead_letters_and_model_failures_in_their_hour() -> None:
    h = Harness()
    h.apply(verdict_records([verdict(f"e{i}", at(7)) for i in range(9)]))
    h.apply(
        [
            raw(TOPICS.dead_letters, 0, 0, to_bytes(dead_letter(at(7), 0))),
            raw(
                TOPICS.dead_letters,
                0,
                1,
                to_bytes(dead_letter(at(7), 1, reason=DeadLetterReason.SCORING_FAILED)),
            ),
            # an hour with dead letters and no verdict still gets a window
            raw(TOPICS.dead_letters, 0, 2, to_bytes(dead_letter(at(8), 2))),
        ]
    )
    w = h.window(7)
    assert w.dead_letters == 2
    assert (w.error_rate.hits, w.error_rate.total) == (1, 10)
    assert h.window(8, version="none").dead_letters == 1
    # once a model version has a window in that hour, the placeholder goes
    h.apply(verdict_records([verdict("late", at(8))], first=9))
    assert h.window(8).dead_letters == 1
    assert f"{int(at(8).timestamp())}|none" not in h.state.latest


def test_undecodable_records_are_counted_not_fatal() -> None:
    h = Harness()
    h.apply(
        [
            raw(TOPICS.verdicts, 0, 0, b"not json"),
            raw(TOPICS.dead_letters, 0, 0, b'{"reason": "nope"}'),
            raw(TOPICS.labels, 0, 0, b"[1, 2]"),
            # a model version that would read as the hour's pseudo-window
            raw(TOPICS.labels, 0, 1, to_bytes(label("e", at(1), at(2), version="*"))),
            *verdict_records([verdict("ok", at(1))], first=1),
        ]
    )
    assert h.state.totals == {
        "rejected:invalid_json": 1,
        "rejected:invalid_value": 2,
        "rejected:not_an_object": 1,
    }
    assert h.window(1).events == 1


def test_two_model_versions_get_two_windows() -> None:
    h = Harness()
    h.apply(
        verdict_records(
            [verdict("a", at(2), version="1.0.0"), verdict("b", at(2), version="2.0.0")]
        )
    )
    assert h.window(2, "1.0.0").events == 1 and h.window(2, "2.0.0").events == 1


def test_batching_and_redelivery_do_not_change_the_result() -> None:
    rng = random.Random(3)
    verdicts = [
        verdict(f"e{i}", at(rng.uniform(0, 72)), flagged=rng.random() < 0.1) for i in range(400)
    ]
    records = verdict_records(verdicts)
    whole, pieces = Harness(), Harness()
    whole.apply(records)
    cut = sorted(rng.sample(range(1, len(records)), 20))
    for lo, hi in zip([0, *cut], [*cut, len(records)], strict=True):
        # redelivered from somewhere before the piece, as after a rebalance or restart
        pieces.apply(records[max(0, lo - rng.randint(0, 30)) : hi])
    assert {k: (w.events, w.flagged, w.late_events) for k, w in whole.state.latest.items()} == {
        k: (w.events, w.flagged, w.late_events) for k, w in pieces.state.latest.items()
    }


def test_the_two_latencies_are_kept_apart() -> None:
    h = Harness()
    h.apply(
        verdict_records(
            [
                verdict(f"e{i}", at(4), model_ms=2.0, scored_at=at(4) + timedelta(seconds=3))
                for i in range(20)
            ]
        )
    )
    w = h.window(4)
    assert w.model_latency_ms.p95 is not None and math.isclose(
        w.model_latency_ms.p95, 2.0, rel_tol=0.045
    )
    assert w.e2e_latency_ms.p95 is not None and math.isclose(
        w.e2e_latency_ms.p95, 3000.0, rel_tol=0.045
    )


def test_gauges_show_the_newest_window() -> None:
    h = Harness()
    h.apply(
        verdict_records(
            [
                verdict("a", at(1), version="gauge-1"),
                verdict("b", at(1), version="gauge-1", flagged=True),
            ]
        )
    )
    h.apply(verdict_records([verdict("c", at(0), version="gauge-1")], first=2))  # older hour
    labels = {"model_version": "gauge-1"}
    assert REGISTRY.get_sample_value("l2loop_window_events", labels) == 2
    assert REGISTRY.get_sample_value("l2loop_window_flag_rate", labels) == 0.5
    assert REGISTRY.get_sample_value("l2loop_window_start_seconds", labels) == at(1).timestamp()
