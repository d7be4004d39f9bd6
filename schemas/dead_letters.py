"""DeadLetter: an input the pipeline could not use, with the reason why.

A dead letter must fit the topic it goes to, whatever arrived: raw bytes above a bound are
cut (their length and sha256 kept), and every other field has a size limit of its own. The
limits are the schema's (``l2loop schemas export`` states them); the bound on ``raw`` that
a worker applies is ``L2LOOP_DEAD_LETTER_RAW_MAX_BYTES``, at most ``MAX_RAW_BYTES``.
"""

from __future__ import annotations

import base64
import hashlib
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from l2loop.schemas.common import SCHEMA_VERSION, EventTime, utc_now

# Base64 makes 4 bytes of 3, so a letter at these limits stays far below the 1,000,000 bytes
# Faust's producer sends and Kafka's default max.message.bytes (1,048,588).
MAX_RAW_BYTES: Final = 256 * 1024
MAX_KEY_BYTES: Final = 1024
MAX_ERROR_CHARS: Final = 2000
# Kafka's own limit on a topic name.
MAX_TOPIC_CHARS: Final = 249


def base64_length(size: int) -> int:
    """Characters of the padded base64 of ``size`` bytes: what a JSON Schema limit counts."""
    return 4 * ((size + 2) // 3)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DeadLetterReason(StrEnum):
    EMPTY_MESSAGE = "empty_message"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_VALUE = "invalid_value"
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LARGE = "text_too_large"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCORING_FAILED = "scoring_failed"
    # A well-formed label report (from Kafka) that failed a check; the error names the check.
    REPORT_REFUSED = "report_refused"
    # A record that crashed its agent again and again at one offset: dead-lettered
    # unprocessed by the next start (streams.poison, decision 0016).
    POISON_PILL = "poison_pill"


class DeadLetter(BaseModel):
    # Raw bytes travel as base64 in JSON and stay bytes in Python.
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    schema_version: int = SCHEMA_VERSION
    reason: DeadLetterReason
    error: str = Field(
        max_length=MAX_ERROR_CHARS, description="what was wrong, readable by a person"
    )
    source_topic: str = Field(max_length=MAX_TOPIC_CHARS)
    partition: int
    offset: int
    key: bytes | None = Field(
        None,
        max_length=MAX_KEY_BYTES,
        json_schema_extra={"maxLength": base64_length(MAX_KEY_BYTES)},
        description=f"the record's key; its first {MAX_KEY_BYTES} bytes if longer",
    )
    raw: bytes = Field(
        max_length=MAX_RAW_BYTES,
        json_schema_extra={"maxLength": base64_length(MAX_RAW_BYTES)},
        description="the record's value as received (URL-safe base64 in JSON); only its "
        "first bytes when raw_truncated",
    )
    raw_size: int = Field(ge=0, description="length in bytes of the value as received")
    raw_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        max_length=64,
        description="sha256 of the whole value as received, truncated or not",
    )
    raw_truncated: bool = Field(False, description="raw holds only the value's first bytes")
    event_id: str | None = Field(
        None, max_length=256, description="when it could be read from the record"
    )
    dead_lettered_at: EventTime = Field(default_factory=utc_now)

    @model_validator(mode="before")
    @classmethod
    def _whole_raw_describes_itself(cls, data: Any) -> Any:
        # A letter without raw_size and raw_sha256 carries its raw whole (letters written
        # before the fields existed are such), so they follow from it.
        if not isinstance(data, dict) or "raw" not in data:
            return data
        if "raw_size" in data and "raw_sha256" in data:
            return data
        raw = data["raw"]
        if isinstance(raw, str):
            # JSON input: raw is still base64 here, and pydantic decodes it later.
            try:
                raw = base64.urlsafe_b64decode(raw)
            except ValueError:
                return data
        if not isinstance(raw, bytes):
            return data
        return {"raw_size": len(raw), "raw_sha256": sha256_hex(raw), **data}
