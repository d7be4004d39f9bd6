"""The dataset assembler: one period of the curated store becomes a versioned training dataset.

``assemble_dataset(settings, period)`` writes ``<data_dir>/datasets/<version>/``:

- ``train.jsonl``, ``val.jsonl``, ``test.jsonl``: ``TrainingRecord`` lines (the incremental
  additions format, ``l2model.corpus.read_jsonl`` reads them): the period's curated examples,
  weighted, and the variations of its false positives. The base corpus is not copied in: the
  trainer has it (``workers.retraining.dataset.base_corpus``); the additions are deduplicated
  against it.
- ``rejected.jsonl``: every line that could not be used, with file, line and reason.
- ``conflicts.jsonl``: texts held back because they were reported both ways, or contradict
  the base corpus's label.
- ``manifest.json``: period, inputs, counts with reasons, label/family/source counts, weight
  sums, the sha256 of every file, the configuration and the code version.

How, in bounded memory (docs/decisions/0012-dataset-assembly.md; each step is a module of
``l2loop.workers.assembly``):

1. *Scan* (``scan``) every day file of the period once, line by line, validating each line
   and keeping per example only where its latest revision lies (file, offset) and which
   labels it was reported with. The bytes read are hashed: with the configuration they name
   the version.
2. *Resolve* (``resolve``) examples in ``example_id`` order: read the latest revision back
   by offset, hold back conflicts, drop duplicates of the base corpus, weight the rest and
   make the variations of each false positive. Records go to a spill file (``spill``) with
   their near-duplicate group; only counts and one integer per text stay in memory.
3. *Balance* (``balance``) by dropping the majority class's variations (never a curated
   example), then *split* near-duplicate groups 80/10/10 within each stratum and *write*
   the spill out (``splits``); the ``manifest`` is written last.

Everything is ordered by content, never by time, so a re-run is byte-identical. The dataset
is built in a temporary directory beside the target, fsynced and renamed into place, under
a lock (``durable``); leftovers of a crashed run are removed by the next one. The period's
curated objects are first copied into local day files (each revision once,
``CuratedStore.export_days``), which the scan and the resolve steps read. Where the shared
state is a bucket, the finished dataset is also put there (``datasets/<version>/``, its
manifest last), and a dataset another machine assembled is fetched rather than rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import orjson

from l2loop.logs import get_logger
from l2loop.settings import Settings
from l2loop.stores.shared import curated_store
from l2loop.workers.assembly.balance import assign_splits, balance_classes
from l2loop.workers.assembly.dataset import (
    CONFLICTS_FILE,
    DATASETS_DIR,
    JSON_PRETTY,
    MANIFEST_FILE,
    REJECTED_FILE,
    AssembledDataset,
    AssemblyConfig,
)
from l2loop.workers.assembly.durable import exclusive, write_durably
from l2loop.workers.assembly.manifest import build_manifest, dataset_version, file_entry
from l2loop.workers.assembly.period import Period
from l2loop.workers.assembly.progress import ProgressCallback, Ticker
from l2loop.workers.assembly.resolve import Conflicts, resolve_examples
from l2loop.workers.assembly.scan import Rejects, scan_days
from l2loop.workers.assembly.spill import SPILL_FILE
from l2loop.workers.assembly.splits import write_splits
from l2model.corpus import generate_corpus
from l2model.golden import golden_text_keys
from l2model.private import fsync_path, private_dir
from l2model.record import text_key
from l2model.storage import Storage, download_dir, upload_dir

log = get_logger(__name__)

_LOCK_FILE = ".assembly.lock"
_TEMP_PREFIX = ".tmp-"


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
    ticker = Ticker(progress, settings.assembly_progress_every)
    store = curated_store(settings)
    # Only the deployment's own datasets are shared; one built elsewhere (out_root) is not.
    shared = store.storage if out_root is None else None
    with exclusive(root / _LOCK_FILE):
        for leftover in sorted(root.glob(f"{_TEMP_PREFIX}*")):
            # Under the lock no other assembler runs here: this is what a crash left behind.
            log.warning("assembly_leftover_removed", path=str(leftover))
            shutil.rmtree(leftover)
        temp = root / f"{_TEMP_PREFIX}{period.name}-{os.getpid()}"
        inputs = root / f"{_TEMP_PREFIX}input-{period.name}-{os.getpid()}"
        private_dir(temp)
        try:
            days = store.export_days(period.start, period.end, inputs)
            return _assemble_into(temp, root, days, shared, period, config, ticker, settings)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
            shutil.rmtree(inputs, ignore_errors=True)


def _assemble_into(
    temp: Path,
    root: Path,
    days: list[Path],
    shared: Storage | None,
    period: Period,
    config: AssemblyConfig,
    ticker: Ticker,
    settings: Settings,
) -> AssembledDataset:
    base = generate_corpus(config.base_size, config.base_seed)
    base_labels = {text_key(record.text): record.label for record in base}
    base_fingerprint = hashlib.sha256("".join(sorted(base_labels)).encode()).hexdigest()
    golden = golden_text_keys(config.golden_version)
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(path.open("rb")) for path in days]
        rejects = stack.enter_context(Rejects(temp / REJECTED_FILE, settings))
        scan = scan_days(handles, golden, rejects, ticker)
        version = dataset_version(period, config, scan.files, base_fingerprint)
        target = root / version
        if shared is not None and not (target / MANIFEST_FILE).exists():
            _fetch(shared, version, target)
        if (target / MANIFEST_FILE).exists():
            log.info("assembly_exists", version=version, path=str(target))
            manifest = orjson.loads((target / MANIFEST_FILE).read_bytes())
            return AssembledDataset(version, target, manifest, built=False)
        conflicts = stack.enter_context(Conflicts(temp / CONFLICTS_FILE, settings))
        resolved = resolve_examples(
            handles, scan, base_labels, golden, conflicts, config, temp, ticker
        )
    balance = balance_classes(resolved, base, config)
    assignment = assign_splits(temp / SPILL_FILE, balance, config, ticker)
    written = write_splits(temp, assignment, balance, ticker)
    (temp / SPILL_FILE).unlink()
    manifest = build_manifest(
        version, period, config, scan, resolved, balance, written, rejects, conflicts, base
    )
    manifest["files"] = {
        name: file_entry(temp / name) for name in sorted(os.listdir(temp)) if name != MANIFEST_FILE
    }
    write_durably(temp / MANIFEST_FILE, orjson.dumps(manifest, option=JSON_PRETTY) + b"\n")
    fsync_path(temp)
    if target.exists():
        # A directory without a manifest is not a dataset this code wrote: replace it.
        shutil.rmtree(target)
    os.rename(temp, target)
    fsync_path(root)
    if shared is not None:
        _publish(shared, version, target)
    log.info("assembly_done", version=version, path=str(target), records=written.total)
    return AssembledDataset(version, target, manifest)


def _key(version: str) -> str:
    return f"{DATASETS_DIR}/{version}"


def _publish(storage: Storage, version: str, target: Path) -> None:
    """Puts the dataset in shared storage, its manifest last; locally it is already there."""
    if storage.local_path(_key(version)) != target:
        upload_dir(storage, target, _key(version), last=MANIFEST_FILE)


def _fetch(storage: Storage, version: str, target: Path) -> None:
    """The dataset as another machine assembled it, if one did (its manifest is there)."""
    if storage.local_path(_key(version)) is None and storage.exists(
        f"{_key(version)}/{MANIFEST_FILE}"
    ):
        download_dir(storage, _key(version), target)
