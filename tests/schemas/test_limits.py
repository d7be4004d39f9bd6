"""Size limits of the wire records: stated in every exported JSON Schema, and small enough
that a record at all of them still fits a topic."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import clip
from l2loop.schemas.dead_letters import (
    MAX_ERROR_CHARS,
    MAX_KEY_BYTES,
    MAX_RAW_BYTES,
    MAX_TOPIC_CHARS,
    DeadLetter,
    DeadLetterReason,
    sha256_hex,
)
from l2loop.schemas.export import EXPORTED

# What a record may weigh on a topic: Faust's producer refuses requests over 1,000,000 bytes,
# and Kafka's default max.message.bytes is 1,048,588.
PRODUCER_MAX_REQUEST_BYTES = 1_000_000


def unbounded_fields(schema: dict[str, Any]) -> list[str]:
    """Paths of the strings without maxLength, arrays without maxItems and maps without
    maxProperties (or without a limit on their keys) anywhere in ``schema``. Enumerations,
    constants and date-times are bounded by what they may be."""
    defs = schema.get("$defs", {})
    found: list[str] = []

    def walk(node: Any, path: str, seen: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(defs[name], path, seen | {name})
            return
        for option in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", []):
            walk(option, path, seen)
        kind = node.get("type")
        if kind == "string" and not {"enum", "const", "maxLength"} & node.keys():
            if node.get("format") != "date-time":
                found.append(path)
        elif kind == "array":
            if "maxItems" not in node:
                found.append(f"{path}[]")
            walk(node.get("items"), f"{path}[]", seen)
        elif kind == "object":
            for name, child in node.get("properties", {}).items():
                walk(child, f"{path}.{name}", seen)
            values = node.get("additionalProperties")
            if isinstance(values, dict):
                if "maxProperties" not in node:
                    found.append(f"{path}{{}}")
                walk(node.get("propertyNames", {"type": "string"}), f"{path}{{key}}", seen)
                walk(values, f"{path}{{value}}", seen)

    walk(schema, "", frozenset())
    return found


@pytest.mark.parametrize("model", EXPORTED, ids=[m.__name__ for m in EXPORTED])
def test_every_exported_schema_states_a_limit_on_every_field(model: type[BaseModel]) -> None:
    assert unbounded_fields(model.model_json_schema(mode="validation")) == []


def test_the_check_finds_what_has_no_limit() -> None:
    class Loose(BaseModel):
        name: str
        tags: list[int]
        extra: dict[str, str]

    assert unbounded_fields(Loose.model_json_schema()) == [
        ".name",
        ".tags[]",
        ".extra{}",
        ".extra{key}",
        ".extra{value}",
    ]


def test_a_dead_letter_at_every_limit_fits_a_topic() -> None:
    # Control characters are escaped six bytes to one in JSON: the heaviest error text.
    letter = DeadLetter(
        reason=DeadLetterReason.INVALID_JSON,
        error="\x00" * MAX_ERROR_CHARS,
        source_topic="t" * MAX_TOPIC_CHARS,
        partition=2**31 - 1,
        offset=2**63 - 1,
        key=b"\xff" * MAX_KEY_BYTES,
        raw=b"\xff" * MAX_RAW_BYTES,
        raw_size=5 * 1024 * 1024,
        raw_sha256="0" * 64,
        raw_truncated=True,
        event_id="e" * 256,
    )
    assert len(to_bytes(letter)) < PRODUCER_MAX_REQUEST_BYTES


def test_raw_bytes_over_the_schemas_cap_are_refused() -> None:
    with pytest.raises(ValueError, match="raw"):
        DeadLetter(
            reason=DeadLetterReason.INVALID_JSON,
            error="e",
            source_topic="t",
            partition=0,
            offset=0,
            raw=b"x" * (MAX_RAW_BYTES + 1),
        )


def test_a_letter_without_size_and_digest_carries_its_raw_whole() -> None:
    # Letters written before raw could be cut have neither field.
    old = (
        b'{"schema_version":1,"reason":"invalid_json","error":"e","source_topic":"t",'
        b'"partition":0,"offset":3,"key":null,"raw":"bm90IGpzb24=","event_id":null,'
        b'"dead_lettered_at":"2026-11-30T10:00:00Z"}'
    )
    letter = DeadLetter.model_validate_json(old)
    assert letter.raw == b"not json"
    assert (letter.raw_size, letter.raw_sha256) == (8, sha256_hex(b"not json"))
    assert not letter.raw_truncated


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("x" * 100, 40, "x" * 12 + " ... [100 characters in all]"),
        ("x" * 100, 5, "xxxxx"),
    ],
)
def test_clip(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected
    assert len(clip(text, limit)) <= limit
