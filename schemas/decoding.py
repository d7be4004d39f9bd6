"""Total decoding: whatever bytes arrive on a topic become a record or a DeadLetter.

No input may raise out of here: one poison record that escaped as an exception would stop
an agent (and, being replayed after a restart, stop it again). Values that pydantic would
accept but Python cannot represent — a timestamp past year 9999, a number beyond a double —
are dead-lettered as ``invalid_value`` with the field named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from faust.types import EventT
from pydantic import BaseModel, ValidationError

from l2loop.schemas.common import clip
from l2loop.schemas.dead_letters import (
    MAX_ERROR_CHARS,
    MAX_KEY_BYTES,
    MAX_RAW_BYTES,
    DeadLetter,
    DeadLetterReason,
    sha256_hex,
)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def raw_records(events: Sequence[EventT[Any]]) -> list[RawRecord]:
    """The raw records of a batch that ``take_events`` handed an agent."""
    return [
        RawRecord(
            event.message.topic,
            event.message.partition,
            event.message.offset,
            event.message.key,
            event.message.value,
        )
        for event in events
    ]


_TYPE_ERRORS = ("_type", "model_attributes_type")
_OWN_REASONS = frozenset(reason.value for reason in DeadLetterReason)


def _reason_for(error: ValidationError) -> DeadLetterReason:
    first = error.errors()[0]
    kind, loc = first["type"], first["loc"]
    if kind in _OWN_REASONS:
        # Validators raise PydanticCustomError with a reason's name (empty_text, ...).
        return DeadLetterReason(kind)
    if loc[:1] == ("schema_version",):
        return DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION
    if kind == "missing":
        return DeadLetterReason.MISSING_FIELD
    if kind == "extra_forbidden":
        return DeadLetterReason.UNKNOWN_FIELD
    if any(kind.endswith(suffix) for suffix in _TYPE_ERRORS):
        return DeadLetterReason.WRONG_TYPE
    return DeadLetterReason.INVALID_VALUE


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
        for item in error.errors(include_url=False)
    )


def dead_letter(
    record: RawRecord,
    reason: DeadLetterReason,
    error: str,
    event_id: str | None = None,
    *,
    raw_max_bytes: int = MAX_RAW_BYTES,
) -> DeadLetter:
    """A DeadLetter that fits its topic whatever arrived: the value cut at ``raw_max_bytes``
    (its size and sha256 kept), the key and the error cut at the schema's limits."""
    raw = record.value or b""
    limit = min(raw_max_bytes, MAX_RAW_BYTES)
    return DeadLetter(
        reason=reason,
        error=clip(error, MAX_ERROR_CHARS),
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=None if record.key is None else record.key[:MAX_KEY_BYTES],
        raw=raw[:limit],
        raw_size=len(raw),
        raw_sha256=sha256_hex(raw),
        raw_truncated=len(raw) > limit,
        event_id=event_id,
    )


def _non_finite_path(value: Any, path: str = "") -> str | None:
    """Where the first number too large for a double sits, as ``a.b.0``; None if nowhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<root>"
    children: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for name, child in children:
        found = _non_finite_path(child, f"{path}.{name}" if path else str(name))
        if found is not None:
            return found
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(value: bytes) -> tuple[Any, tuple[DeadLetterReason, str] | None]:
    try:
        return orjson.loads(value), None
    except orjson.JSONDecodeError as exc:
        # orjson refuses numbers beyond a double, which are valid JSON: find out whether
        # that is why, so that the producer is told which field, not "not JSON".
        try:
            payload = json.loads(value, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return None, (DeadLetterReason.INVALID_JSON, f"value is not JSON: {exc}")
        path = _non_finite_path(payload)
        if path is None:
            return None, (DeadLetterReason.INVALID_JSON, f"value is not JSON: {exc}")
        return payload, (DeadLetterReason.INVALID_VALUE, f"{path}: number is out of range")


def decode_record(
    record: RawRecord,
    model: type[M],
    *,
    id_field: str = "event_id",
    raw_max_bytes: int = MAX_RAW_BYTES,
) -> M | DeadLetter:
    """Turns one raw record into ``model``, or a DeadLetter naming what is wrong with it
    (its raw bytes cut at ``raw_max_bytes``)."""

    def dead(reason: DeadLetterReason, error: str, record_id: str | None = None) -> DeadLetter:
        return dead_letter(record, reason, error, record_id, raw_max_bytes=raw_max_bytes)

    if not record.value:
        return dead(DeadLetterReason.EMPTY_MESSAGE, "the record has no value")
    try:
        record.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead(DeadLetterReason.INVALID_UTF8, f"value is not valid UTF-8: {exc}")
    payload, problem = _parse(record.value)
    record_id = payload.get(id_field) if isinstance(payload, dict) else None
    record_id = record_id if isinstance(record_id, str) and len(record_id) <= 256 else None
    if problem is not None:
        return dead(*problem, record_id)
    if not isinstance(payload, dict):
        return dead(
            DeadLetterReason.NOT_AN_OBJECT,
            f"a {model.__name__} is a JSON object, got {type(payload).__name__}",
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return dead(_reason_for(exc), _describe(exc), record_id)
    except (ArithmeticError, OSError, ValueError, TypeError, RecursionError) as exc:
        # A value the validators let through but Python could not represent; the
        # validators name such fields themselves, this is the net beneath them.
        return dead(DeadLetterReason.INVALID_VALUE, f"unrepresentable value: {exc}", record_id)
