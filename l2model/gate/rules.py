"""One rule of the gate and how it came out: the labelled gate and the counterfactual replay
report their rules alike, so the verdict lists every failure the same way."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class RuleResult(BaseModel):
    """One rule. ``not measured`` (the data holds nothing to measure it on, or the manifest
    records no INT8 loss) does not reject."""

    model_config = ConfigDict(frozen=True)

    rule: str
    status: Literal["pass", "fail", "not measured"]
    value: float | None
    detail: str
