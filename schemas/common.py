"""Types shared by several records."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Final = 1


def _from_rfc3339_or_epoch_ms(value: Any) -> Any:
    # Event time arrives either as an RFC 3339 string or as epoch milliseconds. Numbers are
    # converted here because pydantic would guess seconds vs ms from the magnitude. A string
    # or a datetime (every verdict's two times) is pydantic's to check, and leaves first: a
    # tuple's isinstance costs half a union's, twice a verdict.
    if isinstance(value, (str, datetime)):
        return value
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


def _in_utc(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else value.astimezone(UTC)


# Held in UTC, so that pydantic's own serializer writes RFC 3339 with "Z" (a serializer in
# Python cost a verdict half its encoding time).
EventTime = Annotated[
    AwareDatetime,
    BeforeValidator(_from_rfc3339_or_epoch_ms),
    AfterValidator(_in_utc),
]

_CATEGORY_NAMES: Final = {
    "Cc": "control",
    "Cf": "format",
    "Cs": "surrogate",
    "Co": "private use",
    "Cn": "unassigned",
    "Zs": "space",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}


def _visible(value: str) -> str:
    # Two ids that render alike must be the same id: "u1" and "u\u200b1" would be two
    # reporters (two quota counters, two votes towards a quorum) that a reviewer cannot tell
    # apart, and a NUL or a bidi override garbles every log and listing that shows them.
    # str.isprintable is false for exactly the categories refused here, except the ASCII
    # space, and runs in C on the hot path (every scan event has two identifiers).
    if value.isprintable() and " " not in value:
        return value
    position, char = next((i, c) for i, c in enumerate(value) if not c.isprintable() or c == " ")
    category = unicodedata.category(char)
    named = " ".join(filter(None, (f"U+{ord(char):04X}", unicodedata.name(char, ""))))
    raise PydanticCustomError(
        "invisible_character",
        "identifiers may not contain invisible characters (whitespace, control, format, "
        "surrogate, private-use, unassigned): {char} ({kind}) at position {position}",
        {"char": named, "kind": f"{_CATEGORY_NAMES[category]}, {category}", "position": position},
    )


IDENTIFIER_RULE: Final = (
    "1 to 256 characters, none of them whitespace, control, format (zero-width characters, "
    "bidirectional overrides, U+FEFF), surrogate, private-use or unassigned: Unicode "
    "categories Zs, Zl, Zp, Cc, Cf, Cs, Co and Cn are refused"
)

Identifier = Annotated[
    str,
    # The pattern is for other languages' validators (the export); here `_visible` is the
    # stricter check, with one message for every refused character.
    Field(
        min_length=1,
        max_length=256,
        description=IDENTIFIER_RULE,
        json_schema_extra={"pattern": r"^\S+$"},
    ),
    AfterValidator(_visible),
]
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
