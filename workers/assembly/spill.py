"""The spill: resolved records on disk, one line each with its near-duplicate group,
stratum, variation number and rank, so that balancing and splitting hold only counts in
memory. Records are written in canonical JSON (sorted keys), so a re-run is byte-identical."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from l2loop.workers.assembly.dataset import JSON
from l2model.corpus.dataset import stratum
from l2model.record import TrainingRecord

SPILL_FILE = "spill.tsv"
# Original records sort before their variations within an example's block of the spill.
ORIGINAL = -1


def spill_record(
    spill: IO[bytes], group: bytes, record: TrainingRecord, number: int, rank: int
) -> None:
    label, family, hard = stratum(record)
    head = f"{group.hex()}\t{label}:{family}:{int(hard)}\t{number}\t{rank}\t{record.label}\t"
    spill.write(head.encode() + _canonical(record) + b"\n")


def read_spill(path: Path) -> Iterator[tuple[bytes, str, int, int, int, bytes]]:
    """(group, stratum, variation number, rank, label, record line) of each spilled record."""
    with path.open("rb") as spill:
        for line in spill:
            group, stratum_key, number, rank, label, record = line.split(b"\t", 5)
            yield (
                bytes.fromhex(group.decode()),
                stratum_key.decode(),
                int(number),
                int(rank),
                int(label),
                record,
            )


def _canonical(record: TrainingRecord) -> bytes:
    return orjson.dumps(record.model_dump(), option=JSON)
