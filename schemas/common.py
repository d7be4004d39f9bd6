"""Types shared by several records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BeforeValidator, Field, PlainSerializer

SCHEMA_VERSION: Final = 1


def _from_rfc3339_or_epoch_ms(value: Any) -> Any:
    # Event time arrives either as an RFC 3339 string or as epoch milliseconds. Numbers are
    # converted here because pydantic would guess seconds vs ms from the magnitude.
    if isinstance(value, bool):
        raise ValueError("a timestamp must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            # Valid JSON, but beyond what a datetime holds (years 1..9999): the value is
            # wrong, not the record's shape. OSError is what the C library raises here.
            raise ValueError(f"epoch milliseconds {value!r} are out of range ({exc})") from None
    return value


def _to_rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


EventTime = Annotated[
    AwareDatetime,
    BeforeValidator(_from_rfc3339_or_epoch_ms),
    PlainSerializer(_to_rfc3339, return_type=str, when_used="json"),
]

Identifier = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^\S+$")]
# Names the loop itself gives (model versions, families, contexts, sources): generous limits,
# stated so that every record's size is bounded (l2loop schemas export).
ModelVersion = Annotated[str, Field(max_length=64)]
Name = Annotated[str, Field(max_length=128)]
# Free text the loop writes about a record (why it was held, refused, ...).
MAX_DETAIL_CHARS: Final = 4096
Detail = Annotated[str, Field(max_length=MAX_DETAIL_CHARS)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def clip(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and its full length."""
    if len(text) <= limit:
        return text
    marker = f" ... [{len(text)} characters in all]"
    if len(marker) >= limit:
        return text[:limit]
    return text[: limit - len(marker)] + marker


def utc_now() -> datetime:
    return datetime.now(tz=UTC)
