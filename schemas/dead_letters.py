"""DeadLetter: an input the pipeline could not use, kept whole with the reason why."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import SCHEMA_VERSION, EventTime, utc_now


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


class DeadLetter(BaseModel):
    # Raw bytes travel as base64 in JSON and stay bytes in Python.
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    schema_version: int = SCHEMA_VERSION
    reason: DeadLetterReason
    error: str = Field(description="what was wrong, readable by a person")
    source_topic: str
    partition: int
    offset: int
    key: bytes | None = None
    raw: bytes = Field(
        description="the record's value exactly as received (URL-safe base64 in JSON)"
    )
    event_id: str | None = Field(None, description="when it could be read from the record")
    dead_lettered_at: EventTime = Field(default_factory=utc_now)
