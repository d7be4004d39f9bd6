"""``l2loop up`` shows the loop: canaries, windows, a demo FP spike released through a
hurried rollout and rolled back by the analysis, a quarterly cycle's candidate rolled out
stage by stage, reports and suppressions on the live line, and when the scheduler runs the
next quarterly cycle; and it supervises what it started: a worker, scheduler or embedded
server that dies is restarted, and the live line says what happened and when it recovered."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from l2loop.infra.embedded import current_pid_alive
from l2loop.infra.services import RunningUp
from l2loop.schemas.rollout import ModelRef, Rollout, StageRecord
from l2loop.settings import Settings
from l2loop.up import (
    DEMO_WINDOW_S,
    LiveSummary,
    LoopFigures,
    demo_canary_rate,
    demo_settings,
    rollout_news,
)
from l2loop.workers.scheduler import next_cycle_at
from l2model.golden import load_golden
from tests.fixtures.windows import window


class UpProcess:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("L2LOOP_")}
        environment |= {
            "L2LOOP_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            # A restarted process counts as recovered once up this long: short, for the test.
            "L2LOOP_RESTART_STABLE_S": "2",
            **(env or {}),
        }
        self.data_dir = data_dir
        self.lines: list[str] = []
        # wait_for looks only at lines after the last one it matched: the line must be new.
        self.cursor = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "l2loop", "up", *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, found: Callable[[str], bool], timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index in range(self.cursor, len(self.lines)):
                if found(self.lines[index]):
                    self.cursor = index + 1
                    return self.lines[index]
            assert self.process.poll() is None, "\n".join(self.lines[-30:])
            time.sleep(0.2)
        raise AssertionError("not seen in time:\n" + "\n".join(self.lines[-30:]))

    def seen(self, found: Callable[[str], bool], timeout_s: float = 90.0) -> str:
        """Like ``wait_for``, over every line so far: for lines whose order is not fixed (an
        alert and the rollout transition that raised it come from two readers)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found(line):
                    return line
            assert self.process.poll() is None, "\n".join(self.lines[-30:])
            time.sleep(0.2)
        raise AssertionError("not seen in time:\n" + "\n".join(self.lines[-30:]))

    def running(self) -> RunningUp:
        return RunningUp.model_validate(orjson.loads((self.data_dir / "up.json").read_bytes()))


def _verdicts(line: str) -> int:
    return int(line.split("verdicts=")[1].split()[0]) if "verdicts=" in line else -1


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path / "var", "--rate", "100", "--duration", "150", "--cycle-at", "0")
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGINT)
            process.process.wait(timeout=60)


def _flowing(up: UpProcess) -> int:
    """Waits for the verdict count to grow on new live lines; returns the count reached."""
    start = _verdicts(up.wait_for(lambda line: "verdicts=" in line))
    return _verdicts(up.wait_for(lambda line: _verdicts(line) > start))


def _shown_next_cycle(up: UpProcess) -> str:
    """The next quarterly cycle as the scheduler stored it in up's Redis."""
    running = up.running()
    settings = Settings(redis_url=running.redis_url, topic_prefix=running.topic_prefix)
    when = next_cycle_at(settings)
    assert when is not None
    return f"{when:%Y-%m-%d %H:%M} UTC"


@pytest.mark.timeout(300)
@pytest.mark.integration
def test_up_restarts_a_killed_worker_scheduler_and_redis(up: UpProcess) -> None:
    # The scheduler runs beside the worker and says when the next quarterly cycle is due:
    # 02:00 UTC on the first day of the next quarter (the default cron).
    started = up.wait_for(lambda line: line.startswith("scheduler: next quarterly cycle at "))
    due = started.split(" at ", 1)[1].split(" (", 1)[0]
    when = datetime.strptime(due, "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
    assert (when.month, when.day, when.hour, when.minute) in {(m, 1, 2, 0) for m in (1, 4, 7, 10)}
    assert timedelta(0) < when - datetime.now(tz=UTC) <= timedelta(days=92)
    assert _shown_next_cycle(up) == due
    _flowing(up)
    scheduler_pid = up.running().processes["scheduler"]
    assert current_pid_alive(scheduler_pid)

    worker_pid = up.running().processes["worker"]
    os.kill(worker_pid, signal.SIGKILL)
    up.wait_for(lambda line: "worker exited (code -9)" in line)
    up.wait_for(lambda line: "worker restarted at" in line and "recovered" in line)
    assert up.running().processes["worker"] != worker_pid
    before = _flowing(up)

    os.kill(up.running().processes["redis"], signal.SIGKILL)
    up.wait_for(lambda line: "redis restarted at" in line and "recovered" in line)
    # Scoring goes on once Redis is back: the verdict count keeps growing.
    assert _flowing(up) > before
    # The restarted Redis is empty: the scheduler was started again to store its job there.
    assert up.running().processes["scheduler"] != scheduler_pid
    assert _shown_next_cycle(up) == due

    scheduler_pid = up.running().processes["scheduler"]
    os.kill(scheduler_pid, signal.SIGKILL)
    # Its job is still stored, so it is up again within the second the live line shows.
    up.wait_for(lambda line: "scheduler restarted at" in line and "(exit -9), recovered" in line)
    assert current_pid_alive(up.running().processes["scheduler"])
    assert up.running().processes["scheduler"] != scheduler_pid

    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0
    assert not (up.data_dir / "up.json").exists()


def _figures(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


@pytest.mark.timeout(300)
@pytest.mark.integration
def test_up_shows_a_hurried_spike_rolled_back_and_the_reports_of_its_users(tmp_path: Path) -> None:
    up = UpProcess(
        tmp_path / "var",
        *("--rate", "80", "--duration", "280", "--spike-at", "5", "--spike-for", "35"),
        *("--cycle-at", "0"),
    )
    try:
        up.wait_for(lambda line: line.startswith("demo: windows of 60s"))
        up.wait_for(
            lambda line: (
                line.startswith("rollouts: stages shadow,10,50,100, each held 30s and 300")
                and "split by event" in line
            )
        )
        up.wait_for(lambda line: line.startswith("dashboard: http://") and "?refresh=" in line)
        version = Settings().spike_model_version
        # Released in a hurry: no shadow stage, straight to a tenth of the events.
        up.wait_for(
            lambda line: (
                line.startswith(f"ROLLOUT {version} started at 10% against ")
                and "stages 10,50,100, split by event" in line
            ),
            120,
        )
        rolled_back = up.wait_for(
            lambda line: line.startswith(f"ROLLOUT {version} rolled back at 10%: "), 120
        )
        # Caught at the first stage that exposes users, with the share of users' events it
        # decided: about the stage's tenth.
        found = re.search(r"it had decided (\d+\.\d)% of users' events", rolled_back)
        assert found, rolled_back
        assert 0 < float(found.group(1)) < 50, rolled_back
        assert "serves every event again" in rolled_back
        up.seen(
            lambda line: (
                line.startswith("ALERT rollout_rolled_back firing") and f"model {version}," in line
            ),
            60,
        )
        up.seen(lambda line: f"rollout={version}(rolled-back)" in line, 30)
        # The dashboard's API tells the same story.
        api_url = up.running().api_url
        windows = httpx.get(f"{api_url}/v1/windows", timeout=5).json()["windows"]
        assert {w["model_version"] for w in windows} >= {version}
        recent = httpx.get(f"{api_url}/v1/alerts", timeout=5).json()["recent"]
        assert any(
            a["rule"] == "rollout_rolled_back"
            and a["model_version"] == version
            and a["status"] == "firing"
            for a in recent
        ), recent

        # Honest users' reports of the spike's false positives were curated; the hostile
        # users' reports of real attacks were quarantined. Whether a quorum formed (and so a
        # suppression) depends on how many events the spike decided before its rollback, a
        # few seconds' worth: the line shows the count, which the report suites test. The
        # window's FP rate and recall are shown with their sample counts.
        def shown(line: str) -> bool:
            figures = _figures(line)
            counts = [figures.get(k, "0") for k in ("curated", "quarantined")]
            return all(int(n) > 0 for n in counts) and "%/" in figures.get("recall", "")

        figures = _figures(up.wait_for(shown, 60))
        assert re.fullmatch(r"\d+", figures["suppressions"])
        assert re.fullmatch(r"\d+\.\d%/\d+", figures["recall"])
        assert re.fullmatch(r"(-|\d+\.\d%/\d+)", figures["fp"])
        assert re.fullmatch(r"\d+(\(\w+(,\w+)*\))?", figures["alerts"])
        assert int(figures["verdicts"]) > 0
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=60) == 0
        assert not (up.data_dir / "up.json").exists()
    finally:
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGINT)
            up.process.wait(timeout=60)


@pytest.mark.timeout(480)
@pytest.mark.integration
def test_up_runs_a_quarterly_cycle_on_what_its_users_reported(tmp_path: Path) -> None:
    # Stages held 5 s (the user's setting, kept), so that the whole rollout fits the test.
    up = UpProcess(
        tmp_path / "var",
        *("--rate", "100", "--duration", "400", "--cycle-at", "60"),
        env={"L2LOOP_ROLLOUT_HOLD_S": "5"},
    )
    try:
        up.wait_for(lambda line: "quarterly cycle on their reports 60s after start" in line)
        up.wait_for(lambda line: line.startswith("rollouts: stages shadow,10,50,100, each held 5s"))
        today = datetime.now(tz=UTC).date()
        up.wait_for(lambda line: line.startswith(f"CYCLE {today.isoformat()}.."), 120)
        done = up.wait_for(lambda line: line.startswith("CYCLE ") and "candidate" in line, 200)
        found = re.search(
            r"dataset (\S+); candidate (\S+): gate (ACCEPTED|REJECTED), ([^;]+)(;|$)", done
        )
        assert found, done
        dataset, candidate, decision, released = found.groups()[:4]
        # The dataset holds what the demo's users reported (the demo's prompts come from the
        # corpus generator, so most are already in the base corpus: the line says how many
        # are new), the report says what the gate decided, and the candidate is registered
        # whatever the decision.
        curated = orjson.loads((up.data_dir / "datasets" / dataset / "manifest.json").read_bytes())[
            "curated"
        ]
        assert curated["examples"] > 0, curated
        assert (
            f"distinct curated examples {curated['examples']}, "
            f"new to the base corpus {curated['additions']};"
        ) in done
        report = (up.data_dir / "datasets" / dataset / "retrain-report.md").read_text()
        assert f"candidate **{candidate}**" in report
        assert (up.data_dir / "models" / "registry" / candidate).is_dir()
        if decision == "REJECTED":
            assert released == "not promoted", done
        else:
            # Accepted: released through a staged rollout, which the score workers drive and
            # up follows, stage by stage, to its end.
            started = re.fullmatch(r"rollout (\S+) started \(shadow,10,50,100\)", released)
            assert started, done
            assert f"rollout {started.group(1)} started (shadow,10,50,100)" in report
            up.seen(lambda line: line.startswith(f"ROLLOUT {candidate} started at shadow"), 30)
            ended = up.seen(
                lambda line: line.startswith(
                    (f"ROLLOUT {candidate} completed", f"ROLLOUT {candidate} rolled back")
                ),
                150,
            )
            if "completed" in ended:
                up.seen(lambda line: f"ROLLOUT {candidate} advanced to 100%" in line, 1)
                # The worker follows the pointer: verdicts now name the candidate.
                up.wait_for(lambda line: f"model={candidate}" in line, 60)
            else:
                assert "of users' events" in ended, ended
                up.wait_for(lambda line: f"rollout={candidate}(rolled-back)" in line, 30)
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=60) == 0
    finally:
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGINT)
            up.process.wait(timeout=60)


def test_the_demo_canary_rate_lets_every_window_alert_on_either_label() -> None:
    probes = load_golden(Settings().golden_version).probes
    shares = [sum(p.label == label for p in probes) / len(probes) for label in (0, 1)]
    for window_s in (60, 300):
        settings = Settings(window_size_s=window_s, alert_min_samples=100)
        per_window = demo_canary_rate(settings) * window_s / 60
        # Within the first half of a window, benign and malicious probes alike are enough.
        assert all(per_window * share / 2 >= 100 for share in shares)
    # Hourly windows get enough at the configured rate, which is kept.
    hourly = Settings(window_size_s=3600, canary_probes_per_min=60)
    assert demo_canary_rate(hourly) == 60


def test_the_live_figures_name_the_window_alerts_reports_and_suppressions() -> None:
    empty = LoopFigures().line()
    assert "fp=- " in empty and "alerts=0 " in empty and "curated=0" in empty
    spike = window(100, canary_benign=200, canary_fp=40, canary_malicious=150, canary_tp=150)
    figures = LoopFigures(
        window=spike,
        open_rules=["fp_rate_spike", "latency_p95", "fp_rate_spike"],
        reports={"curated": 7, "quarantined": 2, "rejected:duplicate": 3, "rejected:golden_set": 1},
        suppressions=4,
    )
    shown = _figures(figures.line())
    assert shown["fp"] == "20.0%/200"
    assert shown["recall"] == "100.0%/150"
    assert shown["alerts"] == "3(fp_rate_spike,latency_p95)"
    assert (shown["curated"], shown["quarantined"], shown["rejected"]) == ("7", "2", "4")
    assert shown["suppressions"] == "4"


def _rollout(**update: object) -> Rollout:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    rollout = Rollout(
        run_id="20261201T120000-1.1.0-abc123",
        candidate=ModelRef(version="1.1.0", path="/registry/1.1.0"),
        incumbent=ModelRef(version="1.0.0", path="/registry/1.0.0"),
        stages=["shadow", "10", "50", "100"],
        stage_index=0,
        status="running",
        hash_by="event",
        started_at=now,
        stage_started_at=now,
    )
    return rollout.model_copy(update=update)


def _ended(stage: str, outcome: str) -> StageRecord:
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    return StageRecord.model_validate(
        {"stage": stage, "started_at": at, "ended_at": at, "outcome": outcome, "by": "analysis"}
    )


def test_the_live_line_shows_where_a_rollout_stands() -> None:
    def shown(rollout: Rollout | None) -> str | None:
        return _figures(LoopFigures(rollout=rollout).line()).get("rollout")

    assert shown(None) is None
    assert shown(_rollout()) == "1.1.0@shadow"
    assert shown(_rollout(stage_index=1)) == "1.1.0@10%"
    assert shown(_rollout(stage_index=2, status="paused")) == "1.1.0@50%(paused)"
    assert shown(_rollout(stage_index=1, status="rolled_back")) == "1.1.0(rolled-back)"
    assert shown(_rollout(stage_index=3, status="completed")) == "1.1.0(completed)"


def test_every_rollout_transition_gets_a_line() -> None:
    shadow = _rollout()
    started = rollout_news(None, shadow)
    assert started == [
        "ROLLOUT 1.1.0 started at shadow against 1.0.0: stages shadow,10,50,100, split by "
        "event (run 20261201T120000-1.1.0-abc123)"
    ]
    assert rollout_news(shadow, shadow) == []
    ten = _rollout(stage_index=1, history=[_ended("shadow", "advanced")])
    assert rollout_news(shadow, ten) == ["ROLLOUT 1.1.0 advanced to 10% (by the analysis)"]
    paused = ten.model_copy(update={"status": "paused"})
    assert rollout_news(ten, paused) == ["ROLLOUT 1.1.0 paused at 10%"]
    assert rollout_news(paused, ten) == ["ROLLOUT 1.1.0 resumed at 10%"]
    # Two readings a second apart may miss a stage: each one that ended is told, in order.
    full = _rollout(
        stage_index=3,
        history=[_ended("shadow", "advanced"), _ended("10", "advanced"), _ended("50", "advanced")],
    )
    assert rollout_news(ten, full) == [
        "ROLLOUT 1.1.0 advanced to 50% (by the analysis)",
        "ROLLOUT 1.1.0 advanced to 100% (by the analysis); it is the model in service now",
    ]
    done = full.model_copy(
        update={"status": "completed", "history": [*full.history, _ended("100", "completed")]}
    )
    assert rollout_news(full, done) == ["ROLLOUT 1.1.0 completed: it serves every event"]
    rolled_back = ten.model_copy(
        update={
            "status": "rolled_back",
            "reason": "canary_fp_rate: candidate 40/120 = 33.33 %",
            "candidate_share": 0.0987,
            "history": [*ten.history, _ended("10", "rolled_back")],
        }
    )
    assert rollout_news(ten, rolled_back) == [
        "ROLLOUT 1.1.0 rolled back at 10%: canary_fp_rate: candidate 40/120 = 33.33 %; it had "
        "decided 9.9% of users' events; 1.0.0 serves every event again"
    ]
    # A new run after a finished one is a start.
    again = _rollout(run_id="20261201T130000-1.2.0-def456")
    assert rollout_news(rolled_back, again)[0].startswith("ROLLOUT 1.1.0 started at shadow")


def test_the_model_in_service_is_not_the_candidate_on_trial() -> None:
    summary = LiveSummary()
    verdict = {"scored_at": "2026-12-01T12:00:01Z", "ts": "2026-12-01T12:00:00Z"}
    summary.add_verdict(
        0.0, {**verdict, "latency_ms": 1.0, "is_threat": False, "model_version": "1.0.0"}
    )
    summary.candidate = "1.1.0"
    summary.add_verdict(
        0.1, {**verdict, "latency_ms": 1.0, "is_threat": True, "model_version": "1.1.0"}
    )
    assert summary.model_version == "1.0.0" and summary.total_verdicts == 2
    # At 100 (or once the split ends) the candidate's verdicts are the model in service's.
    summary.candidate = None
    summary.add_verdict(
        0.2, {**verdict, "latency_ms": 1.0, "is_threat": True, "model_version": "1.1.0"}
    )
    assert summary.model_version == "1.1.0"


def test_the_demo_holds_rollout_stages_briefly_unless_the_user_set_them() -> None:
    demo = demo_settings(Settings(), DEMO_WINDOW_S)
    assert (demo.rollout_hold_s, demo.rollout_min_events, demo.rollout_min_canary) == (
        30.0,
        300,
        60,
    )
    assert demo.rollout_hash_by == "event" and demo.window_size_s == DEMO_WINDOW_S
    chosen = demo_settings(Settings(rollout_hold_s=5, rollout_hash_by="tenant"), DEMO_WINDOW_S)
    assert (chosen.rollout_hold_s, chosen.rollout_hash_by) == (5, "tenant")
    assert chosen.rollout_min_events == 300
