"""Decoding raw records: every malformed kind gets its own clear reason. No broker needed."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from l2loop.demo.traffic import MALFORMED
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.dead_letters import MAX_ERROR_CHARS, MAX_KEY_BYTES, DeadLetter, DeadLetterReason
from l2loop.schemas.events import ScanEvent
from l2loop.streams.reports import decode_label_report
from l2loop.streams.scoring import RawRecord, action_for, decode_scan_event


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


MB = 1024 * 1024


def _event(text: str) -> bytes:
    return orjson.dumps(
        {"event_id": "ev-big", "ts": "2026-12-01T10:00:00Z", "tenant_id": "t", "text": text}
    )


@pytest.mark.parametrize("size", [MB, 5 * MB], ids=["1MB", "5MB"])
def test_an_oversized_event_is_text_too_large_and_its_letter_keeps_only_a_bounded_raw(
    size: int,
) -> None:
    raw = _event("a" * size)
    decoded = decode_scan_event(record(raw), raw_max_bytes=64 * 1024)
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is DeadLetterReason.TEXT_TOO_LARGE
    assert decoded.event_id == "ev-big"
    assert f"text is {size} bytes" in decoded.error
    assert decoded.raw == raw[: 64 * 1024]
    assert decoded.raw_truncated
    assert (decoded.raw_size, decoded.raw_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert len(to_bytes(decoded)) < 100 * 1024


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00" * (5 * MB), DeadLetterReason.INVALID_JSON),
        (b"\xff" * (5 * MB), DeadLetterReason.INVALID_UTF8),
        (b"[" + b"1," * (2 * MB) + b"1]", DeadLetterReason.NOT_AN_OBJECT),
    ],
    ids=["nul", "binary", "array"],
)
def test_five_megabytes_that_are_no_event_end_bounded(
    value: bytes, reason: DeadLetterReason
) -> None:
    decoded = decode_scan_event(record(value), raw_max_bytes=1000)
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is reason
    assert (len(decoded.raw), decoded.raw_size, decoded.raw_truncated) == (1000, len(value), True)
    assert len(decoded.error) <= MAX_ERROR_CHARS


def test_an_error_quoting_much_of_the_input_is_cut() -> None:
    # Every unknown field is named in the error: ten thousand of them, with long names.
    payload = {"event_id": "e", "ts": 1, "tenant_id": "t", "text": "hi"}
    payload |= {f"field-{i:05d}-" + "x" * 100: 1 for i in range(10_000)}
    decoded = decode_scan_event(record(orjson.dumps(payload)))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is DeadLetterReason.UNKNOWN_FIELD
    assert len(decoded.error) == MAX_ERROR_CHARS
    assert decoded.error.startswith("field-00000-")
    assert decoded.error.endswith("characters in all]")


def test_a_record_under_the_bound_is_kept_whole_and_a_long_key_is_cut() -> None:
    value = b"not json"
    decoded = decode_scan_event(RawRecord("l2.scan-events", 0, 1, b"k" * 5000, value))
    assert isinstance(decoded, DeadLetter)
    assert (decoded.raw, decoded.raw_truncated, decoded.raw_size) == (value, False, len(value))
    assert decoded.key == b"k" * MAX_KEY_BYTES


@pytest.mark.parametrize("size", [MB, 5 * MB], ids=["1MB", "5MB"])
def test_an_oversized_label_report_is_dead_lettered_bounded(size: int) -> None:
    raw = orjson.dumps(
        {
            "report_id": "r-big",
            "event_id": "e",
            "tenant_id": "t",
            "reporter_id": "u",
            "kind": "false_negative",
            "text": "a" * size,
        }
    )
    decoded = decode_label_report(RawRecord("l2.label-reports", 0, 3, None, raw))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is DeadLetterReason.INVALID_VALUE
    assert decoded.error.startswith("text: String should have at most 32768 characters")
    assert (decoded.raw_size, decoded.raw_truncated) == (len(raw), True)
    assert len(to_bytes(decoded)) < 512 * 1024
