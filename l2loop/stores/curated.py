"""The curated store: every revision of every CuratedExample, in append-only day files.

Layout: ``<data_dir>/curated/<YYYY-MM-DD>.jsonl``, one CuratedExample (JSON) per line, the
day being the UTC day of the record's ``curated_at``; so replaying the topic into an empty
store rebuilds the same files. Years of examples live here, whatever the broker's retention.

Revisions. The report agent re-emits an example (same ``example_id``) with a higher
``reporter_count`` / ``confidence`` as more reporters confirm it; each revision is appended.
**A reader that wants one record per example takes the latest revision per ``example_id``:
the greatest ``curated_at``** (the dataset assembler does so). A record replayed by Kafka,
or re-emitted unchanged by the report agent on the same day, is written once: appends are
idempotent by the revision id (the record without ``curated_at``).

Crash safety. A batch is written with one ``write`` per day file, ``fsync``ed (and its
directory, for a new file) before the sink acknowledges its offsets. The idempotence index
is derived from the files themselves: after a crash between the write and the offset commit,
the replayed records are found in the file and skipped; a line torn by a crash mid-write has
no newline and is cut off by the next writer (it was never acknowledged, so it is replayed).
Writers of one file (several workers) take an exclusive ``flock`` on it, so the directory
must be on a filesystem with working ``flock`` (local disk, NFSv4).

Privacy. The files are 0600, in directories l2loop creates 0700 (``l2model.private``). Lines
older than the text TTL, and with ``hash_unflagged`` the lines of events the model did not
flag (false-negative reports), keep every field but the text: the ``example_id`` is the
text's hash (``l2model.record.text_key``). Readers skip such lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from l2loop.logs import get_logger
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.reports import CuratedExample
from l2model.private import fsync_path, open_private, private_dir

log = get_logger(__name__)

STORE_DIR = "curated"
SUFFIX = ".jsonl"
# Marks a line whose text was dropped; its example_id still identifies the text.
REDACTED_AT = "text_redacted_at"
# What a revision is identified by: everything but when it was curated, and the text (which
# example_id stands for, and which redaction removes).
_NOT_IN_REVISION = frozenset({"curated_at", "text", REDACTED_AT})


def revision_id(payload: dict[str, Any]) -> str:
    """The identity of one revision of an example, the same before and after redaction."""
    kept = {key: value for key, value in payload.items() if key not in _NOT_IN_REVISION}
    return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()


def curated_day(example: CuratedExample) -> date:
    return example.curated_at.astimezone(UTC).date()


def redacted(payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    kept = {key: value for key, value in payload.items() if key != "text"}
    kept[REDACTED_AT] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return kept


@dataclass
class _FileIndex:
    """The revisions in one day file (inode ``inode``), as of ``size`` bytes read."""

    inode: int = 0
    size: int = 0
    revisions: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class AppendResult:
    written: list[CuratedExample]
    duplicates: int


@contextlib.contextmanager
def _locked_append(path: Path) -> Iterator[IO[bytes]]:
    """Opens ``path`` for appending under an exclusive lock, on the inode the path names now."""
    while True:
        handle = open_private(path, "ab+")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        # A redaction may have replaced the file while we waited for the lock.
        if path.exists() and os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
            break
        handle.close()
    try:
        yield handle
    finally:
        handle.close()


class CuratedStore:
    """Appends revisions idempotently and reads them back, streaming, by period."""

    def __init__(
        self, data_dir: Path, *, hash_unflagged: bool = False, cached_days: int = 8
    ) -> None:
        self.root = data_dir / STORE_DIR
        self._hash_unflagged = hash_unflagged
        self._cached_days = cached_days
        self._indexes: OrderedDict[Path, _FileIndex] = OrderedDict()

    def path(self, day: date) -> Path:
        return self.root / f"{day.isoformat()}{SUFFIX}"

    def days(self) -> list[date]:
        if not self.root.exists():
            return []
        found = []
        for entry in self.root.glob(f"*{SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append(date.fromisoformat(entry.name.removesuffix(SUFFIX)))
        return sorted(found)

    # -- writing -----------------------------------------------------------------------------

    def append(self, examples: Sequence[CuratedExample]) -> AppendResult:
        """Writes the revisions not yet in the store, durably; blocking (run it off the loop)."""
        by_day: dict[date, list[CuratedExample]] = {}
        for example in examples:
            by_day.setdefault(curated_day(example), []).append(example)
        written: list[CuratedExample] = []
        duplicates = 0
        private_dir(self.root)
        for day, items in sorted(by_day.items()):
            new, dup = self._append_day(self.path(day), items)
            written += new
            duplicates += dup
        return AppendResult(written, duplicates)

    def _line(self, example: CuratedExample) -> tuple[str, bytes]:
        payload = example.model_dump(mode="json")
        if self._hash_unflagged and example.report_kind == "false_negative":
            return revision_id(payload), orjson.dumps(redacted(payload, datetime.now(tz=UTC)))
        return revision_id(payload), to_bytes(example)

    def _append_day(
        self, path: Path, items: list[CuratedExample]
    ) -> tuple[list[CuratedExample], int]:
        created = not path.exists()
        with _locked_append(path) as handle:
            index = self._index_for(path, handle)
            lines: list[bytes] = []
            new: list[CuratedExample] = []
            for example in items:
                revision, line = self._line(example)
                if revision in index.revisions:
                    continue
                index.revisions.add(revision)
                lines.append(line + b"\n")
                new.append(example)
            if lines:
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
                index.size = os.fstat(handle.fileno()).st_size
        if created:
            fsync_path(self.root)
        return new, len(items) - len(new)

    def _index_for(self, path: Path, handle: IO[bytes]) -> _FileIndex:
        """The file's revisions, read from where this process last stopped; repairs a torn tail."""
        stat = os.fstat(handle.fileno())
        size = stat.st_size
        index = self._indexes.pop(path, None)
        # A redaction (here or in another worker) replaces the file: read it anew.
        if index is None or index.inode != stat.st_ino or size < index.size:
            index = _FileIndex(inode=stat.st_ino)
        if size > index.size:
            handle.seek(index.size)
            tail = handle.read(size - index.size)
            complete = tail.rfind(b"\n") + 1
            for number, line in enumerate(tail[:complete].splitlines()):
                if not line.strip():
                    continue
                try:
                    index.revisions.add(revision_id(orjson.loads(line)))
                except orjson.JSONDecodeError:
                    # Damaged by hand or by the disk: it cannot match a record, and a sink
                    # that crashed on it would crash again on every restart.
                    log.warning(
                        "curated_line_unreadable",
                        path=str(path),
                        after_byte=index.size,
                        line=number,
                    )
            if complete < len(tail):
                # The last writer died mid-line: that record was never acknowledged.
                handle.truncate(index.size + complete)
                os.fsync(handle.fileno())
            index.size += complete
        self._indexes[path] = index
        while len(self._indexes) > self._cached_days:
            self._indexes.popitem(last=False)
        return index

    def redact_before(self, cutoff: date, now: datetime | None = None) -> int:
        """Drops the texts of every line curated before ``cutoff``; returns how many."""
        now = now or datetime.now(tz=UTC)
        dropped = 0
        for day in self.days():
            if day >= cutoff:
                break
            dropped += self._redact_file(self.path(day), now)
        return dropped

    def _redact_file(self, path: Path, now: datetime) -> int:
        with _locked_append(path) as handle:
            handle.seek(0)
            lines = handle.read().splitlines(keepends=True)
            payloads = [orjson.loads(line) for line in lines if line.endswith(b"\n")]
            todo = sum(1 for payload in payloads if "text" in payload)
            if not todo:
                return 0
            staging = path.with_suffix(".redacting")
            with open_private(staging, "wb") as out:
                for payload in payloads:
                    out.write(
                        orjson.dumps(redacted(payload, now) if "text" in payload else payload)
                        + b"\n"
                    )
                out.flush()
                os.fsync(out.fileno())
            # Readers and writers see the old file or the new one, never half of it.
            staging.replace(path)
            fsync_path(self.root)
        self._indexes.pop(path, None)
        return todo

    # -- reading -----------------------------------------------------------------------------

    def read(self, start: date, end: date) -> Iterator[CuratedExample]:
        """Every stored revision curated on days ``start`` <= day < ``end``, streaming.

        Day by day, each file in append order: memory holds one line at a time. Lines whose
        text was dropped are skipped; so is a last line still being written, and (logged) a
        line that is damaged or not a CuratedExample this code can read.
        """
        for day in self.days():
            if start <= day < end:
                yield from self._read_file(self.path(day))

    @staticmethod
    def _read_file(path: Path) -> Iterable[CuratedExample]:
        with path.open("rb") as handle:
            for number, line in enumerate(handle):
                if not line.endswith(b"\n") or not line.strip():
                    continue
                try:
                    payload = orjson.loads(line)
                    if REDACTED_AT in payload:
                        continue
                    yield CuratedExample.model_validate(payload)
                except (orjson.JSONDecodeError, ValidationError) as exc:
                    log.warning(
                        "curated_line_skipped", path=str(path), line=number, error=str(exc)[:200]
                    )
