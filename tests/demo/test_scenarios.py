"""The robustness scenarios: who is in which tenant, the bar a run must meet, and one small
scenario run end to end (two tenants, one reporting) on the external file when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from l2loop.demo.loop_replay import sample_prompts
from l2loop.demo.scenarios import (
    GENERATED_SOURCE,
    REPORTING,
    SILENT,
    ScenarioResult,
    TenantFigures,
    failures,
    population,
    render_scenarios,
    run_scenario,
)
from l2loop.settings import Settings
from l2model.corpus import CorpusSplit, generate_corpus, split_corpus
from l2model.evaluation import LabeledPrompt, read_labeled
from tests.fixtures.paths import EXTERNAL_EVAL

DATA = EXTERNAL_EVAL
SOURCES = {
    "org/attacks:a.json": 1,
    "org/mixed:m.json": 2,
    "org/maths:q.json": 0,
    "org/code:c.json": 0,
    "org/safety:s.csv": 0,
}


@pytest.fixture(scope="module")
def generated() -> CorpusSplit:
    return split_corpus(generate_corpus(2_000, seed=5), 5)


def _prompts() -> list[LabeledPrompt]:
    prompts = []
    for source, kind in SOURCES.items():
        for i in range(20):
            label = kind if kind < 2 else i % 2
            prompts.append(LabeledPrompt(text=f"{source} prompt {i}", label=label, source=source))
    return prompts


def test_scenario_a_is_the_file_as_one_tenant(generated: CorpusSplit) -> None:
    assert population("a", _prompts(), generated, 0) == {REPORTING: _prompts()}


def test_scenario_b_pairs_the_files_benign_prompts_with_held_out_generated_attacks(
    generated: CorpusSplit,
) -> None:
    tenants = population("b", _prompts(), generated, 0)
    assert list(tenants) == [REPORTING]
    members = tenants[REPORTING]
    assert {p.label for p in members if p.source != GENERATED_SOURCE} == {0}
    attacks = [p for p in members if p.source == GENERATED_SOURCE]
    assert {p.label for p in attacks} == {1}
    assert {p.text for p in attacks} == {r.text for r in generated.test if r.label == 1}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scenario_c_deals_benign_sources_and_sends_other_languages_to_the_silent_tenant(
    generated: CorpusSplit, seed: int
) -> None:
    tenants = population("c", _prompts(), generated, seed)
    reporting, silent = tenants[REPORTING], tenants[SILENT]
    # Every source holding attacks stays with the reporting tenant ...
    assert {"org/attacks:a.json", "org/mixed:m.json"} <= {p.source for p in reporting}
    # ... one of the three benign-only sources (half, rounded down) goes to the silent one.
    file_sources = {p.source for p in silent} - {GENERATED_SOURCE}
    assert len(file_sources) == 1 and SOURCES[file_sources.pop()] == 0
    assert not {p.text for p in reporting} & {p.text for p in silent}
    generated_silent = [p for p in silent if p.source == GENERATED_SOURCE]
    assert generated_silent and all(p.lang != "en" for p in generated_silent)


def test_unknown_scenario(generated: CorpusSplit) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        population("z", _prompts(), generated, 0)


def _result(tenants: list[TenantFigures], accepted: bool = True) -> ScenarioResult:
    result = ScenarioResult(
        scenario="c",
        seed=0,
        reported=10,
        examples=10,
        accepted=accepted,
        failed_rules=[],
        tenants=tenants,
        non_english_benign=100,
        non_english_before=0.01,
        non_english_after=0.015,
        failures=[],
    )
    return result.model_copy(update={"failures": failures(result)})


def _tenant(name: str, fp: tuple[float, float], recall: tuple[float, float]) -> TenantFigures:
    return TenantFigures(
        tenant=name,
        sources=["org/x"],
        benign=100,
        malicious=100,
        fp_before=fp[0],
        fp_after=fp[1],
        recall_before=recall[0],
        recall_after=recall[1],
    )


def test_the_bar() -> None:
    good = _result([_tenant("A", (0.3, 0.15), (0.5, 0.495)), _tenant("B", (0.1, 0.109), (1, 1))])
    assert good.success
    assert _result([_tenant("A", (0.3, 0.16), (0.5, 0.6))]).failures == [
        "A: FP 30.0 % -> 16.0 %, not halved"
    ]
    harmed = _result([_tenant("A", (0.3, 0.1), (0.5, 0.5)), _tenant("B", (0.1, 0.12), (1, 0.98))])
    assert harmed.failures == ["B: FP 10.0 % -> 12.0 %", "B: recall 100.0 % -> 98.0 %"]
    assert _result([_tenant("A", (0.3, 0.1), (0.5, 0.5))], accepted=False).failures == [
        "the gate rejected the candidate"
    ]
    assert "1 of 1 runs meet the bar" in render_scenarios([good], DATA, 0.3)


@pytest.mark.skipif(not DATA.exists(), reason="the external evaluation file is not here")
@pytest.mark.integration
def test_a_small_two_tenant_scenario_helps_the_reporter_and_leaves_the_other_alone(
    settings: Settings, tmp_path: Path
) -> None:
    prompts = sample_prompts(read_labeled(DATA), 2_000, seed=0)
    result = run_scenario(settings, "c", prompts, tmp_path, share=0.3, seed=0)
    assert result.success, (result.failures, result.failed_rules)
    reporting, silent = result.tenants
    assert reporting.tenant == REPORTING and silent.tenant == SILENT
    assert reporting.fp_before is not None and reporting.fp_after is not None
    assert reporting.fp_after <= reporting.fp_before / 2
