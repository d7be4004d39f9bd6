"""The training record every L2 dataset is made of (seeds: incremental training guide).

Field names and ranges follow that guide's incremental-additions format, so records written
here, curated production examples and hand-made additions can be merged into one dataset.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from l2model.contract import CONTEXTS, FAMILIES

BENIGN = "benign"
HARD_NEGATIVE_PREFIX = "HARD NEGATIVE: "


def normalise_text(text: str) -> str:
    """The form two texts are compared in: NFKC, casefolded, whitespace runs collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def seeded_rank(seed: int, key: str) -> str:
    """A deterministic order for sampling and splitting: sort by this to shuffle ``key``s
    the same way on every machine and run, and differently for another ``seed``."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def text_key(text: str) -> str:
    """sha256 of the normalised text: the identity of a prompt across datasets and splits."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


class TrainingRecord(BaseModel):
    """One labelled prompt; indices are stored beside the names because trainers read both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1)
    label: Literal[0, 1]
    family: str
    family_idx: int
    severity_score: float = Field(ge=0.0, le=1.0)
    context: str
    context_idx: int
    weight_multiplier: float = Field(gt=0.0)
    confidence: float = Field(ge=0.0, le=1.0)
    source: str = Field(min_length=1)
    sub_category: str = ""
    rule_id: str = ""
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context {self.context!r} is not one of {CONTEXTS}")
        if self.family_idx != FAMILIES.index(self.family):
            raise ValueError(f"family_idx {self.family_idx} does not match family {self.family}")
        if self.context_idx != CONTEXTS.index(self.context):
            raise ValueError(f"context_idx {self.context_idx} does not match {self.context}")
        if (self.label == 0) != (self.family == BENIGN):
            raise ValueError(f"label {self.label} contradicts family {self.family}")
        if self.label == 0 and self.severity_score != 0.0:
            raise ValueError("a benign record has severity_score 0")
        return self

    @classmethod
    def build(
        cls,
        text: str,
        family: str,
        context: str,
        *,
        severity: float,
        weight: float,
        confidence: float,
        source: str,
        sub_category: str = "",
        rule_id: str = "",
        notes: str = "",
        **extra: Any,
    ) -> Self:
        """A record whose label and indices are derived from ``family`` and ``context``;
        ``extra`` are the fields of a subclass (a curated example's provenance)."""
        return cls(
            text=text,
            label=0 if family == BENIGN else 1,
            family=family,
            family_idx=FAMILIES.index(family),
            severity_score=severity,
            context=context,
            context_idx=CONTEXTS.index(context),
            weight_multiplier=weight,
            confidence=confidence,
            source=source,
            sub_category=sub_category,
            rule_id=rule_id,
            notes=notes,
            **extra,
        )

    @property
    def is_hard_negative(self) -> bool:
        return self.label == 0 and self.notes.startswith(HARD_NEGATIVE_PREFIX)
