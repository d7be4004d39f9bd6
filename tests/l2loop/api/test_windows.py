"""`l2loop api` served by uvicorn in its own process: windows, alerts, the dashboard page
(with the rollout)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.infra.embedded import free_port
from l2loop.schemas.windows import WindowStats
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore
from l2loop.streams.alert_rules import Thresholds
from l2loop.streams.alerts import AlertEvaluator
from tests.fixtures.exposure import accepts, is_loopback, listening_addresses
from tests.fixtures.models import MakeModel
from tests.fixtures.rollout import ABORT_REASON, seed_rollouts
from tests.fixtures.windows import store_latest, window

HOURS = 60
SPIKE_HOUR = 50
RECALL_HOUR = HOURS - 1


def _series() -> list[WindowStats]:
    windows = []
    for hour in range(HOURS):
        if hour == SPIKE_HOUR:
            windows.append(window(hour, revision=3, canary_benign=1000, canary_fp=90))
        elif hour == RECALL_HOUR:
            windows.append(window(hour, revision=2, canary_malicious=1000, canary_tp=800))
        else:
            windows.append(window(hour, revision=3, flagged=95 + hour % 10))
    # A second model version that scored a little of one hour: the page charts the main one.
    windows.append(window(HOURS - 2, model_version="m0", events=120, flagged=6))
    return windows


async def _seed(settings: Settings) -> None:
    """The windows as the window agent leaves them, and alerts made by the real evaluator."""
    client = aioredis.Redis.from_url(settings.redis_dsn)
    try:
        series = _series()
        await store_latest(client, settings, series)
        evaluator = AlertEvaluator(
            AlertStore(client, key_prefix=settings.topic_prefix), Thresholds()
        )
        for stats in series:
            await evaluator.evaluate([stats])
    finally:
        await client.aclose()


@dataclass
class ApiProcess:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def api(settings: Settings, redis_client: object) -> Iterator[ApiProcess]:
    asyncio.run(_seed(settings))
    port = free_port()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = (settings.data_dir / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "l2loop", "api", "--port", str(port)],
        env={**os.environ, **settings.to_env()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((settings.data_dir / "api.log").read_text())
            time.sleep(0.2)
        yield ApiProcess(url, process)
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_the_api_listens_on_loopback_only_by_default(api: ApiProcess, outside_address: str) -> None:
    port = int(api.url.rsplit(":", 1)[1])
    assert not accepts(outside_address, port)
    listening = listening_addresses(api.process.pid)
    assert ("127.0.0.1", port) in listening
    assert all(is_loopback(address) for address, _ in listening), listening


def test_windows_and_alerts_over_http(api: ApiProcess) -> None:
    reply = httpx.get(f"{api.url}/v1/windows", params={"hours": 48}, timeout=10)
    assert reply.status_code == 200
    body = reply.json()
    starts = [w["window_start"] for w in body["windows"] if w["model_version"] == "m1"]
    expected = [
        window(h).window_start.strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(HOURS - 48, HOURS)
    ]
    assert starts == expected
    assert len(body["windows"]) == 49  # and the other model version's one window
    assert body["thresholds"]["fp_rate"] == Settings().alert_fp_rate

    alerts = httpx.get(f"{api.url}/v1/alerts", timeout=10).json()
    assert [(a["rule"], a["status"]) for a in alerts["open"]] == [("recall_drop", "firing")]
    assert [(a["rule"], a["status"]) for a in alerts["recent"]] == [
        ("recall_drop", "firing"),
        ("fp_rate_spike", "resolved"),
        ("fp_rate_spike", "firing"),
    ]
    assert httpx.get(f"{api.url}/v1/windows", params={"hours": 0}, timeout=10).status_code == 422

    schema = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    assert {"/v1/windows", "/v1/alerts"} <= set(schema["paths"])
    assert "WindowStats" in schema["components"]["schemas"]


def test_the_vendored_chart_library_is_served(api: ApiProcess) -> None:
    script = httpx.get(f"{api.url}/static/uPlot.iife.min.js", timeout=10)
    assert script.status_code == 200
    assert "uPlot" in script.text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` package on PATH")
def test_the_dashboard_renders_every_window_and_the_rollout_in_a_real_browser(
    api: ApiProcess, settings: Settings, make_model_dir: MakeModel
) -> None:
    assert CHROMIUM is not None
    current = seed_rollouts(settings, make_model_dir)
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{api.url}/",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    dom = result.stdout.decode()
    assert 'data-rendered="true"' in dom, dom[-2000:]
    charts = {
        match.group(1): match.group(0)
        for match in re.finditer(r'<div class="chart" id="(chart-[a-z]+)"[^>]*>', dom)
    }
    assert set(charts) == {"chart-fp", "chart-recall", "chart-flag", "chart-latency"}
    for tag in charts.values():
        assert 'data-points="48"' in tag, tag
    assert 'data-alerts="1"' in charts["chart-fp"]
    assert 'data-alerts="1"' in charts["chart-recall"]
    assert 'data-alerts="0"' in charts["chart-flag"]
    assert dom.count("<canvas") == 4
    assert 'data-open="1"' in dom

    section = re.search(r'<div id="rollout"([^>]*)>(.*?)</div>\n<script>', dom, re.S)
    assert section is not None, dom[-4000:]
    marks, shown = section.groups()
    assert 'data-status="running"' in marks and 'data-stage="10"' in marks, marks
    assert 'data-checks="7"' in marks and 'data-history="1"' in marks, marks
    assert 'data-finished="aborted"' in marks, marks
    stages = re.findall(r"<li( [^>]*)?>([^<]*)</li>", shown.split('class="stages"')[1])
    assert stages[:4] == [
        (' class="done"', "shadow"),
        (' class="current" aria-current="step"', "10 %"),
        ("", "50 %"),
        ("", "100 %"),
    ]
    assert f"Run {current.run_id}: candidate 2.1.0 against incumbent 1.0.0" in shown
    assert current.last is not None
    for check in current.last.checks:
        assert f"<td>{check.name}</td><td>{check.outcome}</td>" in shown
    assert "<td>candidate</td><td>2.1.0</td><td>400</td><td>20</td><td>1.00 % (1/100)</td>" in shown
    assert "<li>events 400/1000</li>" in shown
    assert "<td>shadow</td>" in shown and "<td>advanced</td><td>operator</td>" in shown
    assert f"aborted</span> at stage 10: {ABORT_REASON}; 1.0.0 serves every event" in shown


def test_cli_prints_windows_and_alerts(settings: Settings, redis_client: object) -> None:
    asyncio.run(_seed(settings))
    env = settings.to_env()
    shown = CliRunner().invoke(main, ["windows", "--hours", "3"], env=env)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) == 1 + 4  # header, three hours of m1 and the m0 window
    assert lines[-1].split()[2] == "m1"
    listed = CliRunner().invoke(main, ["alerts"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0] == "open: 1"
    assert "recall_drop" in listed.output and "fp_rate_spike" in listed.output
