"""JSON Schema files, so producers in other languages can validate what they send."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from l2loop.schemas.dead_letters import DeadLetter
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.reports import (
    CuratedExample,
    LabelReport,
    QuarantinedReport,
    ReportOutcome,
    ReviewDecision,
)
from l2loop.schemas.verdicts import StoredVerdict, Verdict
from l2loop.schemas.windows import Alert

EXPORTED: tuple[type[BaseModel], ...] = (
    ScanEvent,
    Verdict,
    StoredVerdict,
    DeadLetter,
    Alert,
    LabelReport,
    ReportOutcome,
    CuratedExample,
    QuarantinedReport,
    ReviewDecision,
)


def export_json_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EXPORTED:
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"l2loop/{model.__name__}.schema.json"
        path = out_dir / f"{model.__name__}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    return written
