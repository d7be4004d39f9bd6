"""The counterfactual gate end to end: two tenants' traffic in scan-events on the real broker,
their reports in the curated store, a dataset, and a candidate trained, replayed on the
traffic and judged by ``retrain`` against the model in service, with Redis for the pointer.

The model in service is the lite model built on the small base corpus the settings name, so
that a candidate (its graph with a memory of the dataset's examples, or a full retraining on
that base) differs from it only by what the dataset teaches: the flips on the traffic are the
dataset's doing, as they would be in production.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis

from l2loop.schemas.reports import ReportKind
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.workers.assembler import assemble_dataset
from l2loop.workers.assembly.dataset import SPLITS
from l2loop.workers.assembly.period import Period
from l2loop.workers.retrain import retrain
from l2loop.workers.retraining.dataset import base_corpus
from l2loop.workers.retraining.report import RetrainOutcome
from l2model.contract import MANIFEST_FILE
from l2model.corpus import generate_corpus, split_corpus, write_jsonl
from l2model.gate.counterfactual import TenantFlips
from l2model.lite import build_lite
from l2model.record import TrainingRecord
from l2model.storage import LocalStorage
from tests.fixtures.curated import curated_example
from tests.fixtures.traffic import scan_event, send_events

BASE_SIZE = 1_000  # the least the settings allow: each candidate trains in seconds
THROUGH = datetime(2027, 1, 1, tzinfo=UTC)
QUARTER = Period.quarter("2026Q4")  # the curated examples' NOON lies in it
PER_KIND = 15  # events of each kind per tenant


@pytest.fixture(scope="module")
def incumbent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("incumbent")
    build_lite(out, size=BASE_SIZE)
    return out


class Pool:
    """Prompts of the kinds the scenarios need, none of them in the base corpus."""

    def __init__(self) -> None:
        corpus = generate_corpus(12_000, seed=41)
        in_base = {r.text for r in base_corpus(BASE_SIZE, 0).train}
        fresh = [r for r in corpus if r.text not in in_base and not r.is_hard_negative]

        def kind(sub_category: str) -> list[TrainingRecord]:
            return [r for r in fresh if r.sub_category == sub_category]

        self.ordinary = [
            r
            for r in fresh
            if r.sub_category in ("benign_casual_conversation", "programming_database")
        ]
        self.commands = kind("command_execution")
        self.math = kind("benign_math")
        # "Usage: make run [--config FILE] ..." and config files: benign, and flagged by the
        # model in service (its false positives on this traffic).
        self.docs = [r for r in kind("technical_documentation") if "Usage:" in r.text]


@pytest.fixture(scope="module")
def pool() -> Pool:
    return Pool()


@pytest.fixture
def gate_settings(
    topics: Settings, redis_client: redis.Redis, incumbent: Path, pool: Pool
) -> Settings:
    """acme (a developer-tools tenant: metadata names language and source) and globex
    (no metadata) send ordinary prompts, shell-command attacks, arithmetic and, for acme,
    tool documentation."""
    settings = topics.model_copy(update={"base_corpus_size": BASE_SIZE, "model_dir": incumbent})
    acme = [
        *pool.ordinary[: 2 * PER_KIND],
        *pool.commands[:PER_KIND],
        *pool.math[:PER_KIND],
        *pool.docs[:PER_KIND],
    ]
    globex = [
        *pool.ordinary[2 * PER_KIND : 4 * PER_KIND],
        *pool.commands[PER_KIND : 2 * PER_KIND],
        *pool.math[PER_KIND : 2 * PER_KIND],
    ]
    send_events(
        settings,
        [
            *(scan_event("acme", r.text, lang="en", source=r.sub_category) for r in acme),
            *(scan_event("globex", r.text) for r in globex),
        ],
    )
    return settings


def _hand_made_dataset(settings: Settings, records: list[TrainingRecord]) -> Path:
    path = settings.data_dir / "datasets" / "2026Q4-hand-made"
    for name, (_, part) in zip(SPLITS, split_corpus(records, 0).parts(), strict=True):
        write_jsonl(path / f"{name}.jsonl", part)
    manifest = {"period": {"name": QUARTER.name, "start": "2026-10-01", "end": "2027-01-01"}}
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))
    return path


def _reported(settings: Settings, tenant: str, kind: ReportKind, texts: list[str]) -> Path:
    """The tenant's reports, curated, and the quarter's dataset assembled from them."""
    CuratedStore(LocalStorage(settings.data_dir)).append(
        [curated_example(text, tenant=tenant, kind=kind) for text in texts]
    )
    return assemble_dataset(settings, QUARTER).path


def _rule(outcome: RetrainOutcome, starts: str) -> tuple[str, str]:
    assert outcome.counterfactual is not None
    rule = next(r for r in outcome.counterfactual.rules if r.rule.startswith(starts))
    return rule.status, rule.detail


def _row(outcome: RetrainOutcome, tenant: str) -> TenantFlips:
    assert outcome.counterfactual is not None
    return next(r for r in outcome.counterfactual.by_tenant if r.key == tenant)


def test_a_candidate_that_stops_flagging_a_family_nobody_reported_is_rejected(
    gate_settings: Settings, pool: Pool
) -> None:
    # Shell-command attacks labelled benign, at the weight of confirmed reports; nobody
    # reported any of them.
    poisoned = [
        TrainingRecord.build(
            r.text,
            "benign",
            "technical",
            severity=0.0,
            weight=5.0,
            confidence=1.0,
            source="production_false_positive",
        )
        for r in pool.commands[2 * PER_KIND : 2 * PER_KIND + 60]
    ]
    # Incremental mode's memory will not un-flag what its known attacks hold; a full
    # retraining on the batch does.
    full = gate_settings.model_copy(update={"retrain_mode": "full"})
    outcome = retrain(full, _hand_made_dataset(gate_settings, poisoned), THROUGH)

    assert outcome.counterfactual is not None and not outcome.counterfactual.accepted
    assert not outcome.accepted and not outcome.promoted
    assert outcome.traffic is not None and outcome.traffic.sampled == 9 * PER_KIND
    for tenant in ("acme", "globex"):
        row = _row(outcome, tenant)
        assert row.to_allowed >= 5 and row.unexplained_to_allowed == row.to_allowed
        assert not row.within_budget
    status, detail = _rule(outcome, "unexplained flips per tenant")
    assert status == "fail"
    assert "acme:" in detail and "globex:" in detail and "reported nothing" in detail
    report = Path(outcome.report).read_text()
    assert "## Counterfactual replay of recent traffic" in report
    assert "- FAIL: unexplained flips per tenant" in report
    assert "REJECTED" in report
    commands = {r.text[:20] for r in pool.commands[: 2 * PER_KIND]}
    flips = [line for line in report.splitlines() if "flagged → allowed, " in line]
    assert any(text in line for line in flips for text in commands)
    # Each poisoned example brought attacks of its style as counterparts, at its weight: they
    # balance its style, not its words, so the poison still un-flags its family.
    candidate = full.data_dir / "models" / "candidates" / outcome.candidate_version
    training_data = orjson.loads((candidate / MANIFEST_FILE).read_bytes())["training_data"]
    counterparts = training_data["counterparts"]
    assert counterparts["by_script"]["latin"]["full"] == counterparts["examples"] > 0
    assert counterparts["counterparts"] == 3 * counterparts["examples"]


def test_a_candidate_that_flags_another_tenants_ordinary_traffic_is_rejected(
    gate_settings: Settings, pool: Pool
) -> None:
    # acme says arithmetic questions are attacks on its service: its own word for its own
    # traffic, not globex's.
    missed = [r.text for r in pool.math[2 * PER_KIND : 2 * PER_KIND + 40]]
    outcome = retrain(
        gate_settings, _reported(gate_settings, "acme", "false_negative", missed), THROUGH
    )

    assert outcome.counterfactual is not None and not outcome.counterfactual.accepted
    assert not outcome.accepted and not outcome.promoted
    globex, acme = _row(outcome, "globex"), _row(outcome, "acme")
    assert globex.to_flagged >= 5 and globex.unexplained_to_flagged > globex.allowance
    # acme's own arithmetic flips too: it asked for them (its word for its own traffic).
    assert acme.to_flagged >= 1 and acme.unexplained_to_flagged == 0
    assert acme.within_budget
    status, detail = _rule(outcome, "unexplained flips per tenant")
    named = re.search(
        r"globex: \d+ unexplained \(\d+ flagged→allowed, (\d+) allowed→flagged\) of 60 events, "
        r"budget 2; reported nothing",
        detail,
    )
    assert status == "fail" and named is not None and int(named.group(1)) >= 5
    report = Path(outcome.report).read_text()
    assert "| globex |" in report and "- FAIL: unexplained flips per tenant" in report
    math = {r.text[:20] for r in pool.math[PER_KIND : 2 * PER_KIND]}
    flips = [line for line in report.splitlines() if line.startswith("- globex, allowed → flagged")]
    assert flips and all("(unexplained" in line for line in flips)
    assert any(text in line for line in flips for text in math)


def test_a_candidate_whose_flips_its_tenants_reports_explain_passes(
    gate_settings: Settings, pool: Pool
) -> None:
    # acme reports the tool documentation the model in service flags.
    reported = [r.text for r in pool.docs[PER_KIND:]]
    outcome = retrain(
        gate_settings, _reported(gate_settings, "acme", "false_positive", reported), THROUGH
    )

    assert outcome.counterfactual is not None and outcome.counterfactual.accepted
    acme = _row(outcome, "acme")
    assert acme.to_allowed >= 10 and acme.within_budget
    assert _rule(outcome, "unexplained flips per tenant")[0] == "pass"
    assert _rule(outcome, "unexplained flips overall")[0] == "pass"
    explained = [e for e in outcome.counterfactual.examples if e.explained]
    assert explained and {e.tenant_id for e in explained} == {"acme"}
    # acme asked for fewer flags on its own traffic; each flip names the report nearest it.
    assert all(e.nearest_report is not None for e in explained)
    # The metadata's language and source are what the tables group by.
    assert {row.key for row in outcome.counterfactual.by_language} == {"en", "latin"}
    docs = next(r for r in outcome.counterfactual.by_category if r.key == "technical_documentation")
    assert docs.to_allowed >= 10
    report = Path(outcome.report).read_text()
    assert "- PASS: unexplained flips per tenant" in report
    assert "| technical_documentation |" in report and "| en |" in report
