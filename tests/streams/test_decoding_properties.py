"""Property-based: decoding is total for every wire record an agent reads from a topic.

Whatever value sits in whatever field (or whatever bytes arrive), the decoder returns the
record or a DeadLetter with a reason — it never raises — and a decoded record can always be
serialised again (a value that decodes but cannot be written back would crash the sink).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.codec import to_bytes
from schemas.dead_letters import DeadLetter, DeadLetterReason
from schemas.events import ScanEvent
from schemas.verdicts import StoredVerdict, Verdict
from streams.decoding import RawRecord
from streams.scoring import decode_scan_event

# At least 10,000 generated field cases in CI, plus the raw-bytes cases.
FIELD_EXAMPLES = 10_000
BYTES_EXAMPLES = 3_000

# Numbers that are valid JSON but beyond a double or an int64, written as raw JSON text.
HUGE_NUMBERS = ("1e400", "-1e999", "123456789012345678901234567890", "1e-400", "-0")
PLACEHOLDER = "\x00number\x00"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "2026-11-23T10:00:00Z", "9999-12-31T23:59:59Z", "\ud800x"])
    | st.sampled_from([PLACEHOLDER]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)


@dataclass(frozen=True)
class WireCase:
    """One record type read from a topic: its decoder, a valid example, the paths to vary."""

    name: str
    decode: Callable[[RawRecord], BaseModel | DeadLetter]
    valid: dict[str, Any]
    paths: tuple[tuple[str | int, ...], ...]
    # Writes a decoded record back the way the pipeline does, to prove it can.
    write_back: Callable[[Any], bytes]


def _store_scan_event(event: ScanEvent) -> bytes:
    verdict = Verdict(
        event_id=event.event_id,
        ts=event.ts,
        tenant_id=event.tenant_id,
        model_version="1.0.0",
        score=0.9,
        threshold=0.5,
        is_threat=True,
        family="PI",
        severity=0.5,
        context="attack",
        action="block",
        latency_ms=1.0,
        truncated=False,
        ground_truth=event.ground_truth,
    )
    return to_bytes(verdict) + to_bytes(
        StoredVerdict(verdict=verdict, text=event.text, l1=event.l1)
    )


SCAN_EVENT = WireCase(
    name="ScanEvent",
    decode=decode_scan_event,
    valid={
        "schema_version": 1,
        "event_id": "ev-1",
        "ts": "2026-11-23T10:00:00Z",
        "tenant_id": "acme",
        "text": "How do I reverse a list in Python?",
        "l1": {"hits": [{"rule_id": "pi-1", "family": "PI", "severity": "low", "confidence": 0.5}]},
        "ground_truth": {"label": 0, "family": "benign", "source": "canary"},
        "metadata": {"app": "demo"},
    },
    paths=(
        ("schema_version",),
        ("event_id",),
        ("ts",),
        ("tenant_id",),
        ("text",),
        ("l1",),
        ("l1", "hits"),
        ("l1", "hits", 0),
        ("l1", "hits", 0, "rule_id"),
        ("l1", "hits", 0, "severity"),
        ("l1", "hits", 0, "confidence"),
        ("ground_truth",),
        ("ground_truth", "label"),
        ("ground_truth", "source"),
        ("metadata",),
        ("metadata", "app"),
        ("unexpected",),
    ),
    write_back=_store_scan_event,
)

WIRE_CASES = (SCAN_EVENT,)


def _with_value(valid: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(valid)
    node: Any = payload
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return payload


def _encode(payload: dict[str, Any], huge: str) -> bytes:
    # json, not orjson: it writes integers of any size, and lone surrogates as escapes.
    text = json.dumps(payload)
    return text.replace(json.dumps(PLACEHOLDER), huge).encode("utf-8")


def _record(value: bytes) -> RawRecord:
    return RawRecord("l2.in", 0, 42, b"key", value)


def _check(case: WireCase, value: bytes) -> None:
    decoded = case.decode(_record(value))
    if isinstance(decoded, DeadLetter):
        assert decoded.reason in DeadLetterReason
        assert decoded.error
        assert decoded.raw == value
        # The dead letter itself must be publishable.
        assert to_bytes(decoded)
    else:
        assert case.write_back(decoded)


@pytest.mark.parametrize("case", WIRE_CASES, ids=lambda case: case.name)
@settings(
    max_examples=FIELD_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), value=json_values, huge=st.sampled_from(HUGE_NUMBERS))
def test_any_json_value_in_any_field_decodes_or_dead_letters(
    case: WireCase, data: st.DataObject, value: Any, huge: str
) -> None:
    path = data.draw(st.sampled_from(case.paths))
    _check(case, _encode(_with_value(case.valid, path, value), huge))


@pytest.mark.parametrize("case", WIRE_CASES, ids=lambda case: case.name)
@settings(max_examples=BYTES_EXAMPLES, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_decode_or_dead_letter(case: WireCase, raw: bytes) -> None:
    _check(case, raw)


@pytest.mark.parametrize("case", WIRE_CASES, ids=lambda case: case.name)
def test_the_valid_example_decodes(case: WireCase) -> None:
    # Guards the properties above: a case whose example does not decode proves nothing.
    decoded = case.decode(_record(json.dumps(case.valid).encode()))
    assert not isinstance(decoded, DeadLetter), decoded


@pytest.mark.parametrize(
    ("field", "raw", "reason"),
    [
        ("ts", "100000000000000000000", DeadLetterReason.INVALID_VALUE),
        ("ts", "1e300", DeadLetterReason.INVALID_VALUE),
        ("ts", "1e400", DeadLetterReason.INVALID_VALUE),
        ("text", "1e400", DeadLetterReason.INVALID_VALUE),
        (
            "schema_version",
            "123456789012345678901234567890",
            DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION,
        ),
    ],
)
def test_values_python_cannot_represent_name_their_field(
    field: str, raw: str, reason: DeadLetterReason
) -> None:
    payload = _with_value(SCAN_EVENT.valid, (field,), PLACEHOLDER)
    decoded = decode_scan_event(_record(_encode(payload, raw)))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == reason
    assert field in decoded.error
    assert decoded.event_id == "ev-1"
