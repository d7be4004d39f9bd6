"""`l2loop rollout start|status|advance|pause|resume|abort` against the real Redis and a
real model registry."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner, Result

from l2loop.cli import main
from l2loop.schemas.rollout import Rollout
from l2loop.settings import Settings
from tests.fixtures.models import MakeModel
from tests.fixtures.rollout import compare_stage, register


def _rollout(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, ["rollout", *args], env=settings.to_env())


def _status(settings: Settings) -> Rollout:
    shown = _rollout(settings, "status", "--json")
    assert shown.exit_code == 0, shown.output
    return Rollout.model_validate_json(shown.stdout)


def _current_model(settings: Settings) -> str:
    listed = CliRunner().invoke(main, ["model", "list"], env=settings.to_env())
    assert listed.exit_code == 0, listed.output
    return next(line.split()[1] for line in listed.stdout.splitlines() if line.startswith("*"))


def test_a_rollout_advanced_by_hand_to_the_end_promotes_the_candidate(
    settings: Settings, redis_client: object, make_model_dir: MakeModel
) -> None:
    none = _rollout(settings, "status")
    assert none.exit_code == 0 and "no rollout has been started" in none.stdout
    assert _rollout(settings, "status", "--json").stdout.strip() == "null"
    register(settings, make_model_dir, "2.0.0")

    started = _rollout(settings, "start", "2.0.0", "--stages", "10, 100", "--hash-by", "event")
    assert started.exit_code == 0, started.output
    lines = started.stdout.splitlines()
    assert lines[1:] == ["candidate: 2.0.0", "incumbent: 1.0.0", "stages: 10 > 100 (hash by event)"]
    state = _status(settings)
    assert lines[0] == f"run: {state.run_id}"
    assert (state.status, state.stages, state.stage_index, state.hash_by) == (
        "running",
        ["10", "100"],
        0,
        "event",
    )
    assert _current_model(settings) == "1.0.0"

    to_100 = _rollout(settings, "advance")
    assert to_100.exit_code == 0, to_100.output
    assert "running at stage 100 (2 of 2); 2.0.0 is the model in service" in to_100.stdout
    assert _current_model(settings) == "2.0.0"
    done = _rollout(settings, "advance")
    assert done.exit_code == 0 and "completed; 2.0.0 is the model in service" in done.stdout
    assert _current_model(settings) == "2.0.0"

    final = _status(settings)
    assert final.status == "completed"
    assert [(r.stage, r.outcome, r.by) for r in final.history] == [
        ("10", "advanced", "operator"),
        ("100", "completed", "operator"),
    ]
    shown = _rollout(settings, "status")
    assert "stages: 10 > [100]" in shown.stdout and "history: 2 decision(s)" in shown.stdout


def test_status_shows_the_comparison_the_workers_recorded_and_pause_holds_it(
    settings: Settings, redis_client: object, make_model_dir: MakeModel
) -> None:
    register(settings, make_model_dir, "2.0.0")
    assert _rollout(settings, "start", "2.0.0").exit_code == 0
    assert _status(settings).stages == settings.rollout_stages.split(",")
    assert "comparison: none yet at this stage" in _rollout(settings, "status").stdout
    ticked = asyncio.run(compare_stage(settings))
    assert _status(settings) == ticked and ticked.last is not None

    shown = _rollout(settings, "status").stdout
    assert "stages: [shadow] > 10 > 50 > 100" in shown
    assert "status: running at stage shadow (1 of 4)\n" in shown
    candidate = next(line for line in shown.splitlines() if line.startswith("candidate "))
    assert candidate.split()[1:5] == ["2.0.0", "400", "20", "1.00%"]
    for check in ticked.last.checks:
        assert f"{check.name}  " in shown and check.detail in shown
    assert "waiting for:\n" in shown and "  events 400/1000\n" in shown

    paused = _rollout(settings, "pause")
    assert paused.exit_code == 0 and ": paused at stage shadow" in paused.stdout
    again = _rollout(settings, "pause")
    assert again.exit_code == 1 and "the rollout is paused, not running" in again.stderr
    assert _status(settings).status == "paused"
    resumed = _rollout(settings, "resume")
    assert resumed.exit_code == 0 and ": running at stage shadow" in resumed.stdout
    assert _rollout(settings, "resume").exit_code == 1


def test_abort_and_the_commands_refused(
    settings: Settings, redis_client: object, make_model_dir: MakeModel
) -> None:
    unknown = _rollout(settings, "start", "7.7.7")
    assert unknown.exit_code == 1 and "not in the registry" in unknown.stderr
    bad = _rollout(settings, "start", "2.0.0", "--stages", "50,10,100")
    assert bad.exit_code == 2 and "must rise" in bad.stderr
    assert _rollout(settings, "advance").stderr.strip() == (
        "Error: no rollout is running to advance"
    )

    register(settings, make_model_dir, "2.0.0", "2.1.0")
    assert _rollout(settings, "start", "2.0.0").exit_code == 0
    second = _rollout(settings, "start", "2.1.0")
    assert second.exit_code == 1 and "abort it first" in second.stderr
    serving = _rollout(settings, "start", "1.0.0")
    assert serving.exit_code == 1

    aborted = _rollout(settings, "abort", "--reason", "wrong data cut-off")
    assert aborted.exit_code == 0, aborted.output
    assert "aborted at stage shadow (1 of 4): wrong data cut-off; 1.0.0 serves every event" in (
        aborted.stdout
    )
    state = _status(settings)
    assert (state.status, state.reason, state.settled) == ("aborted", "wrong data cut-off", True)
    assert [(r.outcome, r.by) for r in state.history] == [("aborted", "operator")]
    assert _rollout(settings, "abort").exit_code == 1
    assert _current_model(settings) == "1.0.0"
    # A finished run no longer blocks the next one.
    assert _rollout(settings, "start", "2.1.0").exit_code == 0
