"""The wire records and their JSON Schema export."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from l2loop.schemas import DeadLetter, ScanEvent, Verdict
from l2loop.schemas.export import EXPORTED, export_json_schemas


def test_scan_event_accepts_both_event_time_forms_and_serialises_rfc3339() -> None:
    event = ScanEvent.model_validate(
        {"event_id": "e", "ts": 1_700_000_000_123, "tenant_id": "t", "text": "hi"}
    )
    assert event.model_dump(mode="json")["ts"] == "2023-11-14T22:13:20.123000Z"
    assert ScanEvent.model_validate_json(event.model_dump_json()) == event


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        ScanEvent.model_validate(
            {"event_id": "e", "ts": "2026-11-23T10:00:00", "tenant_id": "t", "text": "hi"}
        )


def test_highest_l1_severity() -> None:
    event = ScanEvent.model_validate(
        {
            "event_id": "e",
            "ts": "2026-11-23T10:00:00Z",
            "tenant_id": "t",
            "text": "hi",
            "l1": {
                "hits": [
                    {"rule_id": "pi-1", "family": "PI", "severity": "high", "confidence": 0.9},
                    {"rule_id": "jb-2", "family": "JB", "severity": "critical", "confidence": 0.5},
                ]
            },
        }
    )
    assert event.l1 is not None and event.l1.highest_severity == "critical"


def test_schemas_export_writes_one_valid_file_per_record(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{m.__name__}.schema.json" for m in EXPORTED)
    event_schema = orjson.loads((tmp_path / "out" / "ScanEvent.schema.json").read_bytes())
    assert set(event_schema["required"]) == {"event_id", "ts", "tenant_id", "text"}
    assert event_schema["additionalProperties"] is False
    for model in (Verdict, DeadLetter):
        schema = orjson.loads((tmp_path / "out" / f"{model.__name__}.schema.json").read_bytes())
        assert schema["title"] == model.__name__
