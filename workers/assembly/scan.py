"""Phase 1, the scan: every day file of the period once, line by line, validating each line
and keeping per example only where its latest revision lies (file, offset) and which labels
it was reported with. The bytes read are hashed: with the configuration they name the
version. Lines that cannot be used go to ``rejected.jsonl``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from l2loop.logs import get_logger
from l2loop.schemas.reports import CuratedExample
from l2loop.stores.curated import REDACTED_AT, STORE_DIR
from l2loop.workers.assembly.left_out import Listing
from l2loop.workers.assembly.progress import Ticker
from l2model.record import text_key

log = get_logger(__name__)


@dataclass(slots=True)
class Latest:
    """Where one example's latest revision lies, and what labels its revisions carried."""

    at: float
    file: int
    line: int
    offset: int
    size: int
    revisions: int
    labels: int  # bit 0: reported benign, bit 1: reported malicious
    # (file, line) of the latest revision with each label, for the list of conflicts
    where: list[tuple[int, int] | None]


@dataclass
class Scan:
    files: list[dict[str, Any]]
    names: list[str]
    lines: int = 0
    valid: int = 0
    examples: dict[bytes, Latest] = field(default_factory=dict)


def scan_days(
    handles: Sequence[IO[bytes]], golden: frozenset[str], rejects: Rejects, ticker: Ticker
) -> Scan:
    names = [f"{STORE_DIR}/{Path(handle.name).name}" for handle in handles]
    scan = Scan(files=[], names=names)
    examples = scan.examples
    for number, handle in enumerate(handles):
        digest = hashlib.sha256()
        offset = 0
        line_number = 0
        for line in handle:
            line_number += 1
            digest.update(line)
            scan.lines += 1
            ticker.tick("scan", scan.lines)
            at = offset
            offset += len(line)
            if not line.endswith(b"\n"):
                rejects.add(names[number], line_number, "incomplete_line", "no newline at the end")
                continue
            if not line.strip():
                continue
            example, reason, detail = _validated(line, golden)
            if example is None:
                rejects.add(names[number], line_number, reason, detail)
                continue
            scan.valid += 1
            key = bytes.fromhex(example.example_id)
            moment = example.curated_at.timestamp()
            label_bit = 1 << example.label
            latest = examples.get(key)
            if latest is None:
                examples[key] = Latest(
                    moment,
                    number,
                    line_number,
                    at,
                    len(line),
                    1,
                    label_bit,
                    [None, None],
                )
                examples[key].where[example.label] = (number, line_number)
                continue
            latest.revisions += 1
            latest.labels |= label_bit
            latest.where[example.label] = (number, line_number)
            # Files are read in day order and lines in append order: on a tie the later wins.
            if moment >= latest.at:
                latest.at, latest.file, latest.line = moment, number, line_number
                latest.offset, latest.size = at, len(line)
        scan.files.append({"file": names[number], "bytes": offset, "sha256": digest.hexdigest()})
    ticker.done("scan", scan.lines)
    return scan


def _validated(line: bytes, golden: frozenset[str]) -> tuple[CuratedExample | None, str, str]:
    """The example on ``line``, or why it cannot be used (the guide's rules and ours)."""
    try:
        payload = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, "invalid_json", str(exc)[:200]
    if not isinstance(payload, dict):
        return None, "not_an_object", type(payload).__name__
    if REDACTED_AT in payload:
        return None, "text_redacted", f"text dropped at {payload[REDACTED_AT]} (privacy TTL)"
    try:
        example = CuratedExample.model_validate(payload)
    except ValidationError as exc:
        return None, *_validation_reason(exc)
    key = text_key(example.text)
    if key != example.example_id:
        return None, "example_id_mismatch", f"example_id is not the hash of the text ({key})"
    if example.label != (0 if example.report_kind == "false_positive" else 1):
        return None, "label_contradicts_report", f"{example.report_kind} with label {example.label}"
    if key in golden:
        return None, "golden_text", "a golden-set prompt is never trained on"
    return example, "", ""


def _validation_reason(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    if kind == "missing":
        reason = f"missing_field:{where}"
    elif kind == "extra_forbidden":
        reason = f"unknown_field:{where}"
    elif not where:
        reason = "inconsistent_record"
    else:
        reason = f"invalid_value:{where}"
    return reason, f"{first['msg']} ({exc.error_count()} error(s))"[:300]


class Rejects(Listing):
    def add(self, file: str, line: int, reason: str, detail: str) -> None:
        if self.total < self._keep:
            log.warning("assembly_line_rejected", file=file, line=line, reason=reason)
        self._record(reason, {"file": file, "line": line, "reason": reason, "detail": detail})
