"""ScanEvent: one prompt seen by the scanner fleet, the input of the scoring agent."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from l2loop.schemas.common import SCHEMA_VERSION, EventTime, Identifier, Probability

Severity = Literal["low", "medium", "high", "critical"]

# Hard cap on the raw prompt; anything larger is dead-lettered, not scored. The model itself
# reads only the first ``model_max_chars`` characters (see streams.scoring).
MAX_TEXT_BYTES: Final = 32 * 1024
# Every text the loop carries further (stored verdicts, reports, curated examples) is a
# prompt of at most MAX_TEXT_BYTES bytes, so never more characters than that.
MAX_TEXT_CHARS: Final = MAX_TEXT_BYTES
MAX_METADATA_KEY_CHARS: Final = 128
MAX_METADATA_VALUE_CHARS: Final = 1024


class L1Hit(BaseModel):
    """One rule of the L1 (rules) scanner that fired on the prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: Identifier
    family: str = Field(min_length=1, max_length=64)
    severity: Severity
    confidence: Probability


class L1Summary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    hits: list[L1Hit] = Field(default_factory=list, max_length=256)

    @property
    def highest_severity(self) -> Severity | None:
        order: tuple[Severity, ...] = ("low", "medium", "high", "critical")
        return max((hit.severity for hit in self.hits), key=order.index, default=None)


class GroundTruth(BaseModel):
    """A known label: canary probes and analyst reviews. Read by the window agent only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: Literal[0, 1]
    family: str | None = Field(None, max_length=64)
    source: Literal["canary", "analyst"]


MetadataValue = (
    Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)] | int | float | bool | None
)
MetadataKey = Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)]


class ScanEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Identifier
    ts: EventTime
    tenant_id: Identifier
    # The limit is on UTF-8 bytes, checked below so that an oversized text is dead-lettered
    # as text_too_large; the schema states it in characters, which are never more.
    text: str = Field(
        json_schema_extra={"maxLength": MAX_TEXT_CHARS},
        description=f"the prompt, at most {MAX_TEXT_BYTES} bytes as UTF-8",
    )
    l1: L1Summary | None = None
    ground_truth: GroundTruth | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=64)

    @field_validator("text")
    @classmethod
    def _scorable_text(cls, text: str) -> str:
        if not text.strip():
            raise PydanticCustomError("empty_text", "text is empty or only whitespace")
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > MAX_TEXT_BYTES:
            raise PydanticCustomError(
                "text_too_large",
                "text is {size} bytes, over the {limit}-byte limit",
                {"size": size, "limit": MAX_TEXT_BYTES},
            )
        return text
