"""Reports of what an assembly left out (``rejected.jsonl``, ``conflicts.jsonl``): a JSONL
file each, with counts by reason and the first few inline in the manifest."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import IO, Any, Self

import orjson

from l2loop.settings import Settings
from l2loop.workers.assembly.dataset import JSON
from l2model.private import open_private


class Listing:
    """A JSONL file of what was left out, with counts by reason and the first few inline."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self._path = path
        self._keep = settings.assembly_manifest_examples
        self._out: IO[bytes] | None = None
        self.total = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    def __enter__(self) -> Self:
        self._out = open_private(self._path, "wb")
        return self

    def __exit__(self, *_: object) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()

    def _record(self, reason: str, entry: dict[str, Any]) -> None:
        assert self._out is not None
        self.total += 1
        self.reasons[reason] += 1
        if len(self.examples) < self._keep:
            self.examples.append(entry)
        self._out.write(orjson.dumps(entry, option=JSON) + b"\n")

    def summary(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": dict(sorted(self.reasons.items())),
            "first": self.examples,
            "file": self._path.name,
        }
