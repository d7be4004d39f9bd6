"""The dataset assembler: one period of the curated store becomes a versioned training dataset.

``assemble_dataset(settings, period)`` writes ``<data_dir>/datasets/<version>/``:

- ``train.jsonl``, ``val.jsonl``, ``test.jsonl``: ``TrainingRecord`` lines (the incremental
  additions format, ``l2model.corpus.read_jsonl`` reads them): the period's curated examples,
  weighted, and the variations of its false positives. The base corpus is not copied in: the
  trainer has it (``workers.retrain.base_corpus``); the additions are deduplicated against it.
- ``rejected.jsonl``: every line that could not be used, with file, line and reason.
- ``conflicts.jsonl``: texts held back because they were reported both ways, or contradict
  the base corpus's label.
- ``manifest.json``: period, inputs, counts with reasons, label/family/source counts, weight
  sums, the sha256 of every file, the configuration and the code version.

How, in bounded memory (docs/decisions/0012-dataset-assembly.md):

1. *Scan* every day file of the period once, line by line, validating each line and keeping
   per example only where its latest revision lies (file, offset) and which labels it was
   reported with. The bytes read are hashed: with the configuration they name the version.
2. *Resolve* examples in ``example_id`` order: read the latest revision back by offset, hold
   back conflicts, drop duplicates of the base corpus, weight the rest and make the
   variations of each false positive. Records go to a spill file with their near-duplicate
   group; only counts and one integer per text stay in memory.
3. *Balance* by dropping the majority class's variations (never a curated example), then
   *split* near-duplicate groups 80/10/10 within each stratum and *write* the spill out.

Everything is ordered by content, never by time, so a re-run is byte-identical. The dataset
is built in a temporary directory beside the target, fsynced and renamed into place, under
a lock; leftovers of a crashed run are removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import shutil
import subprocess
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Self

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from l2loop.logs import get_logger
from l2loop.schemas.reports import CuratedExample
from l2loop.settings import Settings
from l2loop.stores.curated import REDACTED_AT, STORE_DIR, CuratedStore
from l2model.corpus import generate_corpus
from l2model.corpus.dataset import stratum
from l2model.corpus.variations import Paraphraser, near_duplicate_key
from l2model.golden import golden_text_keys
from l2model.private import open_private, private_dir
from l2model.record import TrainingRecord, text_key

log = get_logger(__name__)

# Bump when the same input and configuration would give different files.
ASSEMBLY_FORMAT = 1
DATASETS_DIR = "datasets"
SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.json"
REJECTED_FILE = "rejected.jsonl"
CONFLICTS_FILE = "conflicts.jsonl"
VARIATION_SOURCE = "synthetic_variation"
_LOCK_FILE = ".assembly.lock"
_TEMP_PREFIX = ".tmp-"
_SPILL_FILE = "spill.tsv"
_TRAINING_FIELDS = set(TrainingRecord.model_fields)
_DATED_SOURCE = re.compile(r"_\d{4}_\d{2}_\d{2}$")
# Original records sort before their variations within an example's block of the spill.
_ORIGINAL = -1


# -- what callers pass and get -----------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Days ``start`` <= day < ``end`` (UTC days of ``curated_at``), named for the version
    (and for the scheduler's per-period lock and record)."""

    name: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"period {self.name}: start {self.start} is not before {self.end}")
        if not re.fullmatch(r"[0-9A-Za-z_-]+", self.name):
            raise ValueError(f"period name {self.name!r} must be letters, digits, '-', '_'")

    @classmethod
    def quarter(cls, name: str) -> Self:
        """``"2026Q3"``: July, August and September 2026."""
        found = re.fullmatch(r"(\d{4})Q([1-4])", name)
        if found is None:
            raise ValueError(f"{name!r} is not a quarter like 2026Q3")
        year, number = int(found.group(1)), int(found.group(2))
        start = date(year, 3 * number - 2, 1)
        end = date(year + 1, 1, 1) if number == 4 else date(year, 3 * number + 1, 1)
        return cls(name, start, end)

    @classmethod
    def between(cls, since: date, until: date) -> Self:
        """Days ``since`` <= day < ``until``."""
        return cls(f"{since:%Y%m%d}-{until:%Y%m%d}", since, until)

    @classmethod
    def quarter_before(cls, day: date) -> Self:
        """The last whole quarter before the one ``day`` is in (what a quarterly run takes)."""
        number = (day.month - 1) // 3 + 1
        year, number = (day.year - 1, 4) if number == 1 else (day.year, number - 1)
        return cls.quarter(f"{year}Q{number}")

    @property
    def trained_through(self) -> datetime:
        """The moment the period's data ends: midnight UTC starting ``end``."""
        return datetime.combine(self.end, time(), tzinfo=UTC)


class AssemblyConfig(BaseModel):
    """The settings an assembly depends on; part of the dataset's version."""

    model_config = ConfigDict(frozen=True)

    variations_per_fp: int
    variation_weight_min: float
    variation_weight_max: float
    confirmed_weight: float
    bulk_weight: float
    max_class_ratio: float
    split_fractions: tuple[float, float, float]
    seed: int
    base_size: int
    base_seed: int
    golden_version: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            variations_per_fp=settings.assembly_variations_per_fp,
            variation_weight_min=settings.assembly_variation_weight_min,
            variation_weight_max=settings.assembly_variation_weight_max,
            confirmed_weight=settings.assembly_confirmed_weight,
            bulk_weight=settings.assembly_bulk_weight,
            max_class_ratio=settings.assembly_max_class_ratio,
            split_fractions=(
                settings.assembly_train_fraction,
                settings.assembly_val_fraction,
                settings.assembly_test_fraction,
            ),
            seed=settings.assembly_seed,
            base_size=settings.base_corpus_size,
            base_seed=settings.base_corpus_seed,
            golden_version=settings.golden_version,
        )


@dataclass(frozen=True)
class AssemblyProgress:
    """``phase`` is scan, resolve, split or write; ``total`` is None while unknown."""

    phase: str
    done: int
    total: int | None


@dataclass(frozen=True)
class AssembledDataset:
    version: str
    path: Path
    manifest: dict[str, Any]
    # False when a dataset of this version already existed and was returned as it was.
    built: bool = True

    def split_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"no split {split!r}; the splits are {SPLITS}")
        return self.path / f"{split}.jsonl"


ProgressCallback = Callable[[AssemblyProgress], None]


def assemble_dataset(
    settings: Settings,
    period: Period,
    *,
    out_root: Path | None = None,
    progress: ProgressCallback | None = None,
) -> AssembledDataset:
    """Builds (or finds, when the same input was assembled before) the period's dataset."""
    root = out_root if out_root is not None else settings.data_dir / DATASETS_DIR
    private_dir(root)
    config = AssemblyConfig.from_settings(settings)
    ticker = _Ticker(progress, settings.assembly_progress_every)
    store = CuratedStore(settings.data_dir)
    with _exclusive(root / _LOCK_FILE):
        for leftover in sorted(root.glob(f"{_TEMP_PREFIX}*")):
            # Under the lock no other assembler runs here: this is what a crash left behind.
            log.warning("assembly_leftover_removed", path=str(leftover))
            shutil.rmtree(leftover)
        temp = root / f"{_TEMP_PREFIX}{period.name}-{os.getpid()}"
        private_dir(temp)
        try:
            return _assemble_into(temp, root, store, period, config, ticker, settings)
        finally:
            shutil.rmtree(temp, ignore_errors=True)


# -- the run -------------------------------------------------------------------------------------


def _assemble_into(
    temp: Path,
    root: Path,
    store: CuratedStore,
    period: Period,
    config: AssemblyConfig,
    ticker: _Ticker,
    settings: Settings,
) -> AssembledDataset:
    base = generate_corpus(config.base_size, config.base_seed)
    base_labels = {text_key(record.text): record.label for record in base}
    base_fingerprint = hashlib.sha256("".join(sorted(base_labels)).encode()).hexdigest()
    golden = golden_text_keys(config.golden_version)
    days = [day for day in store.days() if period.start <= day < period.end]
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(store.path(day).open("rb")) for day in days]
        rejects = stack.enter_context(_Rejects(temp / REJECTED_FILE, settings))
        scan = _scan(handles, golden, rejects, ticker)
        version = _version(period, config, scan.files, base_fingerprint)
        target = root / version
        if (target / MANIFEST_FILE).exists():
            log.info("assembly_exists", version=version, path=str(target))
            manifest = orjson.loads((target / MANIFEST_FILE).read_bytes())
            return AssembledDataset(version, target, manifest, built=False)
        conflicts = stack.enter_context(_Conflicts(temp / CONFLICTS_FILE, settings))
        resolved = _resolve(handles, scan, base_labels, golden, conflicts, config, temp, ticker)
    balance = _balance(resolved, base, config)
    assignment = _assign_splits(temp / _SPILL_FILE, balance, config, ticker)
    written = _write_splits(temp, assignment, balance, ticker)
    (temp / _SPILL_FILE).unlink()
    manifest = _manifest(
        version, period, config, scan, resolved, balance, written, rejects, conflicts, base
    )
    manifest["files"] = {
        name: _file_entry(temp / name) for name in sorted(os.listdir(temp)) if name != MANIFEST_FILE
    }
    _write_durably(temp / MANIFEST_FILE, orjson.dumps(manifest, option=_JSON_PRETTY) + b"\n")
    _fsync_path(temp)
    if target.exists():
        # A directory without a manifest is not a dataset this code wrote: replace it.
        shutil.rmtree(target)
    os.rename(temp, target)
    _fsync_path(root)
    log.info("assembly_done", version=version, path=str(target), records=written.total)
    return AssembledDataset(version, target, manifest)


def _version(period: Period, config: AssemblyConfig, files: list[dict[str, Any]], base: str) -> str:
    named = {
        "format": ASSEMBLY_FORMAT,
        "period": [period.name, period.start.isoformat(), period.end.isoformat()],
        "config": config.model_dump(mode="json"),
        "inputs": files,
        "base": base,
    }
    return f"{period.name}-{hashlib.sha256(orjson.dumps(named, option=_JSON)).hexdigest()[:12]}"


# -- 1. scan -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Latest:
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
class _Scan:
    files: list[dict[str, Any]]
    names: list[str]
    lines: int = 0
    valid: int = 0
    examples: dict[bytes, _Latest] = field(default_factory=dict)


def _scan(
    handles: Sequence[IO[bytes]], golden: frozenset[str], rejects: _Rejects, ticker: _Ticker
) -> _Scan:
    names = [f"{STORE_DIR}/{Path(handle.name).name}" for handle in handles]
    scan = _Scan(files=[], names=names)
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
                examples[key] = _Latest(
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


# -- 2. resolve ----------------------------------------------------------------------------------


@dataclass
class _Resolved:
    levels: int = 0
    examples: int = 0
    superseded: int = 0
    duplicate_of_base: int = 0
    additions: Counter[str] = field(default_factory=Counter)
    fp_examples: int = 0
    fp_short: int = 0
    variation_methods: Counter[str] = field(default_factory=Counter)
    # Ranks of the benign variations by variation number, to drop some deterministically.
    variation_ranks: list[array[int]] = field(default_factory=list)
    originals: Counter[int] = field(default_factory=Counter)


def _resolve(
    handles: Sequence[IO[bytes]],
    scan: _Scan,
    base_labels: Mapping[str, int],
    golden: frozenset[str],
    conflicts: _Conflicts,
    config: AssemblyConfig,
    temp: Path,
    ticker: _Ticker,
) -> _Resolved:
    levels = _variation_levels(scan, base_labels, config)
    resolved = _Resolved(levels=levels, variation_ranks=[array("Q") for _ in range(levels)])
    taken = {_compact(key) for key in base_labels} | {_compact(key) for key in golden}
    taken |= {int.from_bytes(key[:8]) for key in scan.examples}
    paraphraser = Paraphraser(lambda text: _compact(text_key(text)) in taken)
    spread = config.variation_weight_max - config.variation_weight_min
    total = len(scan.examples)
    with open_private(temp / _SPILL_FILE, "wb") as spill:
        for done, key in enumerate(sorted(scan.examples), 1):
            ticker.tick("resolve", done, total)
            latest = scan.examples.pop(key)
            resolved.examples += 1
            resolved.superseded += latest.revisions - 1
            handle = handles[latest.file]
            handle.seek(latest.offset)
            example = CuratedExample.model_validate(orjson.loads(handle.read(latest.size)))
            if latest.labels == 0b11:
                conflicts.add(example, "reported_both_ways", latest, scan.names)
                continue
            base_label = base_labels.get(example.example_id)
            if base_label is not None:
                if base_label == example.label:
                    resolved.duplicate_of_base += 1
                else:
                    conflicts.add(example, "contradicts_base", latest, scan.names)
                continue
            record = _weighted(example, config)
            group = near_duplicate_key(record.text)
            _spill(spill, group, record, _ORIGINAL, 0)
            resolved.additions[_source_kind(record.source)] += 1
            resolved.originals[record.label] += 1
            if record.label != 0:
                continue
            resolved.fp_examples += 1
            if levels == 0:
                continue
            rng = random.Random(f"{config.seed}:{example.example_id}")
            made = paraphraser.variations(record.text, levels, rng)
            resolved.fp_short += len(made) < levels
            weight = round(config.variation_weight_min + spread * record.confidence, 3)
            for number, variation in enumerate(made):
                variation_key = text_key(variation.text)
                taken.add(_compact(variation_key))
                rank = _compact(_rank(config.seed, variation_key))
                resolved.variation_ranks[number].append(rank)
                resolved.variation_methods[variation.method] += 1
                copy = record.model_copy(
                    update={
                        "text": variation.text,
                        "weight_multiplier": weight,
                        "source": VARIATION_SOURCE,
                        "rule_id": "",
                        "notes": f"variation {number + 1} of example {example.example_id}: "
                        f"{variation.change}",
                    }
                )
                _spill(spill, group, copy, number, rank)
        spill.flush()
        os.fsync(spill.fileno())
    ticker.done("resolve", total)
    return resolved


def _variation_levels(scan: _Scan, base_labels: Mapping[str, int], config: AssemblyConfig) -> int:
    """Variations to make per false positive: as configured, or fewer when balancing would
    drop them anyway (so that no dropped variation takes a text another one could have had).

    Which examples become additions is known from the scan alone: one label (no conflict),
    not in the base corpus."""
    fp = malicious = 0
    for key, latest in scan.examples.items():
        if latest.labels == 0b11 or key.hex() in base_labels:
            continue
        fp += latest.labels == 0b01
        malicious += latest.labels == 0b10
    if fp == 0:
        return 0
    base_malicious = sum(base_labels.values())
    base_benign = len(base_labels) - base_malicious
    room = int(config.max_class_ratio * (base_malicious + malicious)) - base_benign - fp
    return max(0, min(config.variations_per_fp, -(-room // fp)))


def _weighted(example: CuratedExample, config: AssemblyConfig) -> TrainingRecord:
    """DESIGN.md weights: production-confirmed (a quorum of reporters, or released in review)
    gets the confirmed weight; less support keeps the report agent's weight, within bulk and
    confirmed."""
    if example.confirmed or example.released_in_review:
        weight = config.confirmed_weight
    else:
        weight = min(max(example.weight_multiplier, config.bulk_weight), config.confirmed_weight)
    fields = example.model_dump(include=_TRAINING_FIELDS)
    fields["weight_multiplier"] = weight
    return TrainingRecord.model_validate(fields)


def _spill(spill: IO[bytes], group: bytes, record: TrainingRecord, number: int, rank: int) -> None:
    label, family, hard = stratum(record)
    head = f"{group.hex()}\t{label}:{family}:{int(hard)}\t{number}\t{rank}\t{record.label}\t"
    spill.write(head.encode() + _canonical(record) + b"\n")


def _compact(hex_key: str) -> int:
    """The first 64 bits of a sha256: enough to tell texts apart among tens of millions."""
    return int(hex_key[:16], 16)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _source_kind(source: str) -> str:
    return _DATED_SOURCE.sub("", source)


# -- 3. balance, split, write ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Balance:
    """Benign variations numbered above ``cut``, or at ``cut`` with rank >= ``rank_at``, go."""

    cut: int
    rank_at: int
    dropped: int
    before: dict[str, int]
    after: dict[str, int]
    met: bool

    def keeps(self, number: int, rank: int) -> bool:
        return number < self.cut or (number == self.cut and rank < self.rank_at)


def _balance(resolved: _Resolved, base: list[TrainingRecord], config: AssemblyConfig) -> _Balance:
    """Majority:minority at most ``max_class_ratio`` over what the trainer sees (base corpus
    plus this dataset), by dropping benign variations: the last-numbered first, lowest rank
    kept. Curated examples and hard negatives are never dropped."""
    variations = [len(ranks) for ranks in resolved.variation_ranks]
    base_counts = Counter(record.label for record in base)
    benign = base_counts[0] + resolved.originals[0] + sum(variations)
    malicious = base_counts[1] + resolved.originals[1]
    before = {"benign": benign, "malicious": malicious}
    excess = benign - int(config.max_class_ratio * malicious)
    cut, rank_at, dropped = len(variations), 0, 0
    for number in reversed(range(len(variations))):
        if excess <= 0:
            break
        cut = number
        if excess >= variations[number]:
            excess -= variations[number]
            dropped += variations[number]
            continue
        ranks = sorted(resolved.variation_ranks[number])
        rank_at = ranks[len(ranks) - excess]
        dropped += sum(1 for rank in ranks if rank >= rank_at)
        excess = 0
    after = {"benign": benign - dropped, "malicious": malicious}
    minority = min(after.values())
    met = minority > 0 and max(after.values()) <= config.max_class_ratio * minority
    return _Balance(cut, rank_at, dropped, before, after, met)


@dataclass
class _Assignment:
    groups: dict[bytes, int]
    kept: int


def _assign_splits(
    spill_path: Path, balance: _Balance, config: AssemblyConfig, ticker: _Ticker
) -> _Assignment:
    """Every near-duplicate group to one split. Within each stratum (label, family, hard
    negative) groups are taken in seeded-hash order, each to the split furthest below its
    share of the records so far: 80/10/10 however unequal the groups."""
    sizes: dict[bytes, int] = {}
    strata: dict[bytes, str] = {}
    kept = 0
    for group, stratum_key, number, rank, _, _ in _spilled(spill_path):
        if number != _ORIGINAL and not balance.keeps(number, rank):
            continue
        kept += 1
        ticker.tick("split", kept)
        sizes[group] = sizes.get(group, 0) + 1
        strata.setdefault(group, stratum_key)
    by_stratum: dict[str, list[tuple[str, bytes]]] = {}
    for group, stratum_key in strata.items():
        by_stratum.setdefault(stratum_key, []).append((_rank(config.seed, group.hex()), group))
    assigned: dict[bytes, int] = {}
    fractions = config.split_fractions
    for stratum_key in sorted(by_stratum):
        filled = [0, 0, 0]
        for _, group in sorted(by_stratum[stratum_key]):
            total = sum(filled) + sizes[group]
            deficits = [fractions[i] * total - filled[i] for i in range(3)]
            chosen = max(range(3), key=lambda i: (deficits[i], -i))
            filled[chosen] += sizes[group]
            assigned[group] = chosen
    ticker.done("split", kept)
    return _Assignment(assigned, kept)


@dataclass
class _SplitStats:
    records: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    families: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    sub_categories: Counter[str] = field(default_factory=Counter)
    weights: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        label = "benign" if record["label"] == 0 else "malicious"
        self.labels[label] += 1
        self.families[record["family"]] += 1
        self.sources[_source_kind(record["source"])] += 1
        self.sub_categories[record["sub_category"] or "(none)"] += 1
        self.weights[label] += record["weight_multiplier"]

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "labels": dict(sorted(self.labels.items())),
            "families": dict(sorted(self.families.items())),
            "sources": dict(sorted(self.sources.items())),
            "sub_categories": dict(sorted(self.sub_categories.items())),
            "weight_sums": {k: round(v, 3) for k, v in sorted(self.weights.items())},
        }


@dataclass
class _Written:
    splits: dict[str, _SplitStats]
    groups: dict[str, int]

    @property
    def total(self) -> int:
        return sum(stats.records for stats in self.splits.values())


def _write_splits(
    temp: Path, assignment: _Assignment, balance: _Balance, ticker: _Ticker
) -> _Written:
    stats = {name: _SplitStats() for name in SPLITS}
    groups_per_split = Counter(assignment.groups.values())
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open_private(temp / f"{name}.jsonl", "wb")) for name in SPLITS]
        done = 0
        for group, _, number, rank, _, line in _spilled(temp / _SPILL_FILE):
            if number != _ORIGINAL and not balance.keeps(number, rank):
                continue
            chosen = assignment.groups[group]
            outs[chosen].write(line)
            stats[SPLITS[chosen]].add(orjson.loads(line))
            done += 1
            ticker.tick("write", done, assignment.kept)
        for out in outs:
            out.flush()
            os.fsync(out.fileno())
    ticker.done("write", assignment.kept)
    return _Written(stats, {SPLITS[i]: groups_per_split[i] for i in range(3)})


def _spilled(path: Path) -> Iterator[tuple[bytes, str, int, int, int, bytes]]:
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


# -- manifest ------------------------------------------------------------------------------------


def _manifest(
    version: str,
    period: Period,
    config: AssemblyConfig,
    scan: _Scan,
    resolved: _Resolved,
    balance: _Balance,
    written: _Written,
    rejects: _Rejects,
    conflicts: _Conflicts,
    base: list[TrainingRecord],
) -> dict[str, Any]:
    totals = _SplitStats()
    for stats in written.splits.values():
        totals.records += stats.records
        for mine, theirs in (
            (totals.labels, stats.labels),
            (totals.families, stats.families),
            (totals.sources, stats.sources),
            (totals.sub_categories, stats.sub_categories),
            (totals.weights, stats.weights),
        ):
            mine.update(theirs)
    base_counts = Counter("benign" if r.label == 0 else "malicious" for r in base)
    return {
        "format": ASSEMBLY_FORMAT,
        "version": version,
        "period": {
            "name": period.name,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
        },
        "inputs": {
            "files": scan.files,
            "lines": scan.lines,
            "valid_revisions": scan.valid,
        },
        "curated": {
            "examples": resolved.examples,
            "superseded_revisions": resolved.superseded,
            "duplicate_of_base": resolved.duplicate_of_base,
            "held_back_conflicts": conflicts.total,
            "additions": resolved.examples - resolved.duplicate_of_base - conflicts.total,
            "additions_by_source": dict(sorted(resolved.additions.items())),
        },
        "rejected": rejects.summary(),
        "conflicts": conflicts.summary(),
        "variations": {
            "per_false_positive": config.variations_per_fp,
            "made_per_false_positive": resolved.levels,
            "false_positives": resolved.fp_examples,
            "false_positives_with_fewer": resolved.fp_short,
            "made": sum(len(ranks) for ranks in resolved.variation_ranks),
            "by_method": dict(sorted(resolved.variation_methods.items())),
            "dropped_to_balance": balance.dropped,
        },
        "balance": {
            "max_ratio": config.max_class_ratio,
            "counted_over": "base corpus + this dataset",
            "before": balance.before,
            "after": balance.after,
            "met": balance.met,
        },
        "splits": {
            name: {**stats.summary(), "near_duplicate_groups": written.groups[name]}
            for name, stats in written.splits.items()
        },
        "totals": totals.summary(),
        "base": {
            "size": config.base_size,
            "seed": config.base_seed,
            "labels": dict(sorted(base_counts.items())),
            "how": "l2model.corpus.split_corpus(generate_corpus(size, seed), seed)",
        },
        "config": config.model_dump(mode="json"),
        "code": _code_version(),
    }


def _code_version() -> dict[str, str | None]:
    try:
        package: str | None = metadata.version("l2loop")
    except metadata.PackageNotFoundError:
        package = None
    try:
        commit: str | None = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": package, "git_commit": commit}


def _file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size, "lines": lines}


# -- reports of what was left out -----------------------------------------------------------------


class _Listing:
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
        self._out.write(orjson.dumps(entry, option=_JSON) + b"\n")

    def summary(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": dict(sorted(self.reasons.items())),
            "first": self.examples,
            "file": self._path.name,
        }


class _Rejects(_Listing):
    def add(self, file: str, line: int, reason: str, detail: str) -> None:
        if self.total < self._keep:
            log.warning("assembly_line_rejected", file=file, line=line, reason=reason)
        self._record(reason, {"file": file, "line": line, "reason": reason, "detail": detail})


class _Conflicts(_Listing):
    def add(self, example: CuratedExample, reason: str, latest: _Latest, names: list[str]) -> None:
        where = {
            str(label): f"{names[at[0]]}:{at[1]}"
            for label, at in enumerate(latest.where)
            if at is not None
        }
        self._record(
            reason,
            {
                "example_id": example.example_id,
                "reason": reason,
                "text": example.text,
                "latest_label": example.label,
                "revisions": latest.revisions,
                "latest_revision_by_label": where,
            },
        )


# -- plumbing ------------------------------------------------------------------------------------

_JSON = orjson.OPT_SORT_KEYS
_JSON_PRETTY = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2


def _canonical(record: TrainingRecord) -> bytes:
    return orjson.dumps(record.model_dump(), option=_JSON)


class _Ticker:
    """Calls the progress callback and logs a line every ``every`` items of a phase."""

    def __init__(self, callback: ProgressCallback | None, every: int) -> None:
        self._callback = callback
        self._every = every

    def tick(self, phase: str, done: int, total: int | None = None) -> None:
        if done % self._every == 0:
            self._report(phase, done, total)

    def done(self, phase: str, total: int) -> None:
        self._report(phase, total, total)

    def _report(self, phase: str, done: int, total: int | None) -> None:
        log.info("assembly_progress", phase=phase, done=done, total=total)
        if self._callback is not None:
            self._callback(AssemblyProgress(phase, done, total))


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One assembler per dataset root; the kernel releases the lock when its holder dies."""
    with open_private(path, "ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_durably(path: Path, content: bytes) -> None:
    with open_private(path, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
