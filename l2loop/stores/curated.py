"""The curated store: every revision of every CuratedExample, in immutable objects by day.

Layout (keys of l2model.storage, a directory or a bucket): ``curated/<YYYY-MM-DD>/<first>-
<digest>.jsonl``, one CuratedExample (JSON) per line; the day is the UTC day of the records'
``curated_at``, ``first`` the batch's earliest ``curated_at`` (so keys list in about the order
they were curated) and ``digest`` the hash of the batch's revisions. Years of examples live
here, whatever the broker's retention. A store written before objects (``curated/<day>.jsonl``
files) is read as it is.

Revisions. The report agent re-emits an example (same ``example_id``) with a higher
``reporter_count`` / ``confidence`` as more reporters confirm it; each revision is stored.
**A reader that wants one record per example takes the latest revision per ``example_id``:
the greatest ``curated_at``** (the dataset assembler does so). Every read gives each revision
once, however often it was written.

Crash safety and concurrency, on what S3 offers (whole-object puts, listings; no append, no
rename, no lock). A batch is one new object per day it touches, put before the sink
acknowledges its offsets. A writer skips the revisions already in the day's objects (listed,
and each object read once per process): a replay after a crash between the put and the offset
commit writes nothing new, or, with the same batch, the same object again. Two writers that
store one revision at the same moment (a partition moving between sinks mid-batch) write it
twice; readers drop the second copy by its revision id, so nothing is lost and nothing is
read twice.

Privacy. Local objects are 0600 in 0700 directories (``l2model.private``); a bucket's access
is its own policy's. Lines older than the text TTL, and with ``hash_unflagged`` the lines of
events the model did not flag (false-negative reports), keep every field but the text: the
``example_id`` is the text's hash (``l2model.record.text_key``). Readers skip such lines.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from l2loop.logs import get_logger
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.reports import CuratedExample
from l2model.private import open_private, private_dir
from l2model.storage import Storage

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


def _day_of(key: str) -> date | None:
    """The day a key of the store belongs to: ``curated/<day>/...`` or ``curated/<day>.jsonl``."""
    parts = key.split("/")
    if len(parts) < 2 or parts[0] != STORE_DIR or not key.endswith(SUFFIX):
        return None
    try:
        return date.fromisoformat(parts[1].removesuffix(SUFFIX))
    except ValueError:
        return None


def _lines(key: str, data: bytes) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    """The lines of one object, numbered, with their JSON object, None for a damaged one
    (logged: a sink that crashed on it would crash again on every restart). A last line
    without its newline is left out: a file of the earlier layout torn by a crash, never
    acknowledged, so replayed."""
    for number, line in enumerate(data.split(b"\n")[:-1]):
        if not line.strip():
            continue
        try:
            payload = orjson.loads(line)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            log.warning("curated_line_unreadable", key=key, line=number)
            payload = None
        yield number, line, payload


@dataclass
class _DayIndex:
    """The revisions in one day's objects, and which objects they were read from."""

    keys: set[str] = field(default_factory=set)
    revisions: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class AppendResult:
    written: list[CuratedExample]
    duplicates: int


class CuratedStore:
    """Stores revisions idempotently and reads them back, each once, streaming, by period."""

    def __init__(
        self, storage: Storage, *, hash_unflagged: bool = False, cached_days: int = 8
    ) -> None:
        self.storage = storage
        self._hash_unflagged = hash_unflagged
        self._cached_days = cached_days
        self._indexes: OrderedDict[date, _DayIndex] = OrderedDict()

    @property
    def location(self) -> str:
        return self.storage.location(STORE_DIR)

    def _keys(self) -> dict[date, list[str]]:
        """Every key by day, in key order (a day file of the earlier layout sorts before the
        objects of its day: '.' before '/')."""
        by_day: dict[date, list[str]] = {}
        for key in self.storage.keys(f"{STORE_DIR}/"):
            day = _day_of(key)
            if day is not None:
                by_day.setdefault(day, []).append(key)
        return by_day

    def _day_keys(self, day: date) -> list[str]:
        # The earlier layout's day file first: it was written before any object of its day.
        legacy = f"{STORE_DIR}/{day.isoformat()}{SUFFIX}"
        earlier = [legacy] if self.storage.exists(legacy) else []
        return earlier + self.storage.keys(f"{STORE_DIR}/{day.isoformat()}/")

    def days(self) -> list[date]:
        return sorted(self._keys())

    # -- writing -----------------------------------------------------------------------------

    def append(self, examples: Sequence[CuratedExample]) -> AppendResult:
        """Writes the revisions not yet in the store, durably; blocking (run it off the loop)."""
        by_day: dict[date, list[CuratedExample]] = {}
        for example in examples:
            by_day.setdefault(curated_day(example), []).append(example)
        written: list[CuratedExample] = []
        duplicates = 0
        for day, items in sorted(by_day.items()):
            new = self._append_day(day, items)
            written += new
            duplicates += len(items) - len(new)
        return AppendResult(written, duplicates)

    def _line(self, example: CuratedExample) -> tuple[str, bytes]:
        payload = example.model_dump(mode="json")
        if self._hash_unflagged and example.report_kind == "false_negative":
            return revision_id(payload), orjson.dumps(redacted(payload, datetime.now(tz=UTC)))
        return revision_id(payload), to_bytes(example)

    def _append_day(self, day: date, items: list[CuratedExample]) -> list[CuratedExample]:
        index = self._index_for(day)
        revisions: list[str] = []
        lines: list[bytes] = []
        new: list[CuratedExample] = []
        for example in items:
            revision, line = self._line(example)
            if revision in index.revisions or revision in revisions:
                continue
            revisions.append(revision)
            lines.append(line + b"\n")
            new.append(example)
        if not new:
            return new
        first = min(example.curated_at for example in new).astimezone(UTC)
        digest = hashlib.sha256("".join(sorted(revisions)).encode()).hexdigest()[:32]
        key = f"{STORE_DIR}/{day.isoformat()}/{first:%H%M%S%f}-{digest}{SUFFIX}"
        self.storage.put(key, b"".join(lines))
        index.keys.add(key)
        index.revisions.update(revisions)
        return new

    def _index_for(self, day: date) -> _DayIndex:
        """The day's revisions, reading only the objects this process has not read yet."""
        index = self._indexes.pop(day, None) or _DayIndex()
        for key in self._day_keys(day):
            if key in index.keys:
                continue
            data = self.storage.get(key)
            if data is None:
                continue
            index.keys.add(key)
            index.revisions.update(
                revision_id(payload) for _, _, payload in _lines(key, data) if payload is not None
            )
        self._indexes[day] = index
        while len(self._indexes) > self._cached_days:
            self._indexes.popitem(last=False)
        return index

    def redact_before(self, cutoff: date, now: datetime | None = None) -> int:
        """Drops the texts of every line curated before ``cutoff``; returns how many."""
        now = now or datetime.now(tz=UTC)
        dropped = 0
        for day, keys in sorted(self._keys().items()):
            if day >= cutoff:
                break
            for key in keys:
                dropped += self._redact(key, now)
        return dropped

    def _redact(self, key: str, now: datetime) -> int:
        data = self.storage.get(key)
        if data is None:
            return 0
        lines = [(line, payload) for _, line, payload in _lines(key, data)]
        todo = sum(1 for _, payload in lines if payload is not None and "text" in payload)
        if todo:
            # A whole object replaced: readers see it with its texts or without, never half.
            self.storage.put(
                key,
                b"".join(
                    (
                        orjson.dumps(redacted(payload, now))
                        if payload is not None and "text" in payload
                        else line
                    )
                    + b"\n"
                    for line, payload in lines
                ),
            )
        return todo

    # -- reading -----------------------------------------------------------------------------

    def _day_lines(
        self, keys: list[str]
    ) -> Iterator[tuple[str, int, bytes, dict[str, Any] | None]]:
        """Each revision in one day's objects once (its first copy), and each damaged line,
        in key order, with where it is."""
        seen: set[str] = set()
        for key in keys:
            data = self.storage.get(key)
            if data is None:
                continue
            for number, line, payload in _lines(key, data):
                if payload is not None:
                    revision = revision_id(payload)
                    if revision in seen:
                        continue
                    seen.add(revision)
                yield key, number, line, payload

    def read(self, start: date, end: date) -> Iterator[CuratedExample]:
        """Every stored revision curated on days ``start`` <= day < ``end``, once each.

        Day by day: memory holds one object at a time. Lines whose text was dropped are
        skipped; so is (logged) a line that is not a CuratedExample this code can read.
        """
        for _, keys in self._period(start, end):
            yield from self._examples(keys)

    def _period(self, start: date, end: date) -> list[tuple[date, list[str]]]:
        """The keys of each day ``start`` <= day < ``end``, from one listing."""
        return [(day, keys) for day, keys in sorted(self._keys().items()) if start <= day < end]

    def _examples(self, keys: list[str]) -> Iterable[CuratedExample]:
        for key, number, _, payload in self._day_lines(keys):
            if payload is None or REDACTED_AT in payload:
                continue
            try:
                yield CuratedExample.model_validate(payload)
            except ValidationError as exc:
                log.warning("curated_line_skipped", key=key, line=number, error=str(exc)[:200])

    def export_days(self, start: date, end: date, directory: Path) -> list[Path]:
        """The period's revisions as local day files (``<day>.jsonl``, each revision once, in
        key order, a damaged line as it is, for the assembler to list it): the assembler
        reads its input twice and hashes it, and the same objects give the same bytes."""
        private_dir(directory)
        paths = []
        for day, keys in self._period(start, end):
            path = directory / f"{day.isoformat()}{SUFFIX}"
            with open_private(path, "wb") as out:
                for _, _, line, _ in self._day_lines(keys):
                    out.write(line + b"\n")
            paths.append(path)
        return paths
