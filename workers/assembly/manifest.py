"""The dataset's name and account of itself: the version (a hash of the input bytes and the
configuration) and ``manifest.json`` (period, inputs, counts with reasons, label/family/source
counts, weight sums, the sha256 of every file, the configuration and the code version)."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from l2loop.workers.assembly.balance import Balance
from l2loop.workers.assembly.dataset import ASSEMBLY_FORMAT, JSON, AssemblyConfig
from l2loop.workers.assembly.period import Period
from l2loop.workers.assembly.resolve import Conflicts, Resolved
from l2loop.workers.assembly.scan import Rejects, Scan
from l2loop.workers.assembly.splits import SplitStats, Written
from l2model.record import TrainingRecord


def dataset_version(
    period: Period, config: AssemblyConfig, files: list[dict[str, Any]], base: str
) -> str:
    named = {
        "format": ASSEMBLY_FORMAT,
        "period": [period.name, period.start.isoformat(), period.end.isoformat()],
        "config": config.model_dump(mode="json"),
        "inputs": files,
        "base": base,
    }
    return f"{period.name}-{hashlib.sha256(orjson.dumps(named, option=JSON)).hexdigest()[:12]}"


def build_manifest(
    version: str,
    period: Period,
    config: AssemblyConfig,
    scan: Scan,
    resolved: Resolved,
    balance: Balance,
    written: Written,
    rejects: Rejects,
    conflicts: Conflicts,
    base: list[TrainingRecord],
) -> dict[str, Any]:
    totals = SplitStats()
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


def file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size, "lines": lines}
