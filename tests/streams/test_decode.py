"""Decoding raw records: every malformed kind gets its own clear reason. No broker needed."""

from __future__ import annotations

import orjson
import pytest

from schemas.dead_letters import DeadLetter, DeadLetterReason
from schemas.events import ScanEvent
from streams.scoring import RawRecord, action_for, decode_scan_event
from workers.demo_traffic import MALFORMED


def record(value: bytes | None, offset: int = 7) -> RawRecord:
    return RawRecord("l2.scan-events", 2, offset, b"k", value)


@pytest.mark.parametrize(("reason", "build"), MALFORMED, ids=[r.value for r, _ in MALFORMED])
def test_each_malformed_kind_is_dead_lettered_with_its_reason(reason, build) -> None:
    raw = build("ev-1")
    decoded = decode_scan_event(record(raw))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is reason
    assert decoded.raw == raw
    assert (decoded.source_topic, decoded.partition, decoded.offset) == ("l2.scan-events", 2, 7)
    assert decoded.error


def test_tombstone_is_an_empty_message() -> None:
    decoded = decode_scan_event(record(None))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is DeadLetterReason.EMPTY_MESSAGE


def test_error_names_the_field_and_keeps_the_event_id() -> None:
    raw = orjson.dumps({"event_id": "ev-9", "ts": 1, "tenant_id": "t", "text": 5})
    decoded = decode_scan_event(record(raw))
    assert isinstance(decoded, DeadLetter)
    assert decoded.error.startswith("text:")
    assert decoded.event_id == "ev-9"


def test_dead_letter_round_trips_raw_bytes_through_json() -> None:
    decoded = decode_scan_event(record(b"\xff\x00binary"))
    assert isinstance(decoded, DeadLetter)
    again = DeadLetter.model_validate_json(decoded.model_dump_json())
    assert again.raw == b"\xff\x00binary"
    assert again.key == b"k"


def test_valid_event_decodes_both_timestamp_forms() -> None:
    base = {"event_id": "ev-1", "tenant_id": "t", "text": "hello"}
    as_ms = decode_scan_event(record(orjson.dumps({**base, "ts": 1_763_892_000_000})))
    as_text = decode_scan_event(record(orjson.dumps({**base, "ts": "2025-11-23T10:00:00Z"})))
    assert isinstance(as_ms, ScanEvent) and isinstance(as_text, ScanEvent)
    assert as_ms.ts == as_text.ts


@pytest.mark.parametrize(
    ("score", "expected"), [(0.1, "allow"), (0.5, "warn"), (0.84, "warn"), (0.85, "block")]
)
def test_action_follows_threshold_and_block_score(score: float, expected: str) -> None:
    assert action_for(score, threshold=0.5, block_score=0.85) == expected
