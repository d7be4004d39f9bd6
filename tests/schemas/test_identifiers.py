"""Identifiers: two ids that look alike are the same id, so invisible characters are refused."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from l2loop.schemas.common import Identifier
from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.export import export_json_schemas
from l2loop.schemas.reports import LabelReport
from l2loop.streams.reports import decode_label_report
from l2loop.streams.scoring import decode_scan_event
from tests.fixtures.strategies import examples

IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}


def _refusal(value: str) -> str:
    with pytest.raises(ValidationError) as caught:
        IDENTIFIER.validate_python(value)
    return str(caught.value.errors(include_url=False)[0]["msg"])


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("u\u200b1", "U+200B ZERO WIDTH SPACE (format, Cf) at position 1"),
        ("\u202eacme", "U+202E RIGHT-TO-LEFT OVERRIDE (format, Cf) at position 0"),
        ("\ufeffacme", "U+FEFF ZERO WIDTH NO-BREAK SPACE (format, Cf)"),
        ("u\x001", "U+0000 (control, Cc) at position 1"),
        ("u\x7f", "U+007F (control, Cc)"),
        ("alice bob", "U+0020 SPACE (space, Zs)"),
        ("alice\u00a0bob", "U+00A0 NO-BREAK SPACE (space, Zs)"),
        ("a\u2028b", "U+2028 LINE SEPARATOR (line separator, Zl)"),
        ("a\u2029b", "U+2029 PARAGRAPH SEPARATOR (paragraph separator, Zp)"),
        ("a\ue000", "U+E000 (private use, Co)"),
        ("a\u0378", "U+0378 (unassigned, Cn)"),
        ("tab\there", "U+0009 (control, Cc)"),
    ],
)
def test_invisible_characters_are_refused_by_name(value: str, named: str) -> None:
    message = _refusal(value)
    assert message.startswith("identifiers may not contain invisible characters")
    assert named in message


@pytest.mark.parametrize(
    "value", ["u1", "acme-corp", "ev_0001", "müller", "用户7", "e\u0301", "😀", "a" * 256]
)
def test_visible_identifiers_pass_unchanged(value: str) -> None:
    assert IDENTIFIER.validate_python(value) == value


def test_length_bounds_still_hold() -> None:
    for value in ("", "a" * 257):
        with pytest.raises(ValidationError):
            IDENTIFIER.validate_python(value)


@settings(max_examples=examples(2_000), deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_an_identifier_is_accepted_exactly_when_every_character_is_visible(value: str) -> None:
    visible = all(unicodedata.category(char) not in REFUSED_CATEGORIES for char in value)
    try:
        IDENTIFIER.validate_python(value)
    except ValidationError:
        assert not visible, ascii(value)
    else:
        assert visible, ascii(value)


def _record(payload: dict[str, Any]) -> RawRecord:
    return RawRecord("l2.some-topic", 0, 1, None, orjson.dumps(payload))


@pytest.mark.parametrize("field", ["event_id", "tenant_id"])
def test_a_scan_event_with_an_invisible_id_is_dead_lettered_naming_the_field(field: str) -> None:
    event = {"event_id": "e1", "ts": "2026-11-23T10:00:00Z", "tenant_id": "t1", "text": "hi"}
    letter = decode_scan_event(_record({**event, field: "e\u200b1"}))
    assert isinstance(letter, DeadLetter)
    assert letter.reason is DeadLetterReason.INVALID_VALUE
    assert letter.error.startswith(f"{field}: identifiers may not contain")
    assert isinstance(decode_scan_event(_record(event)), ScanEvent)


@pytest.mark.parametrize("field", ["report_id", "event_id", "tenant_id", "reporter_id"])
def test_a_kafka_report_with_an_invisible_id_is_dead_lettered_naming_the_field(
    field: str,
) -> None:
    report = {
        "report_id": "r1",
        "event_id": "e1",
        "tenant_id": "acme",
        "reporter_id": "u1",
        "kind": "false_positive",
    }
    letter = decode_label_report(_record({**report, field: "u\u202e1"}))
    assert isinstance(letter, DeadLetter)
    assert letter.reason is DeadLetterReason.INVALID_VALUE
    assert letter.error.startswith(f"{field}: identifiers may not contain")
    assert "U+202E" in letter.error
    assert isinstance(decode_label_report(_record(report)), LabelReport)


def test_the_exported_schema_states_the_rule(tmp_path: Any) -> None:
    export_json_schemas(tmp_path)
    schema = orjson.loads((tmp_path / "LabelReport.schema.json").read_bytes())
    reporter = schema["properties"]["reporter_id"]
    assert reporter["pattern"] == r"^\S+$"
    assert "format (zero-width characters, bidirectional overrides" in reporter["description"]
    assert "Cf" in reporter["description"] and "Zs" in reporter["description"]
