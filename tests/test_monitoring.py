"""The compose stack's monitoring against the real thing (decision 0028): Prometheus's and
Alertmanager's own checkers accept the configuration, and every series a rule or a dashboard
query reads is exported by the processes Prometheus scrapes, started as compose starts them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from l2loop.infra.embedded import free_port
from l2loop.settings import Settings
from tests.fixtures.deploy import (
    ALERTMANAGER,
    PROMETHEUS,
    PROMETHEUS_SERIES,
    RULE_TESTS,
    api_port,
    dashboard_queries,
    exported_names,
    metric_names,
    rule_files,
    rules,
    scrape_jobs,
    services,
    worker_services,
)


def _check(tool: str, package: str, *args: str) -> None:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed (Debian package {package}; .ci/run installs it)")
    result = subprocess.run([found, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_promtool_accepts_the_configuration_and_its_rules() -> None:
    _check("promtool", "prometheus", "check", "config", str(PROMETHEUS))
    _check("promtool", "prometheus", "check", "rules", *map(str, rule_files()))


@pytest.mark.integration
def test_the_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    _check("promtool", "prometheus", "test", "rules", str(RULE_TESTS))


@pytest.mark.integration
def test_amtool_accepts_the_alertmanager_configuration() -> None:
    _check("amtool", "prometheus-alertmanager", "check-config", str(ALERTMANAGER))


@contextlib.contextmanager
def _running(args: list[str], settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``l2loop ARGS`` in a process of its own, with ``settings`` as its environment."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "l2loop", *args],
            env={**os.environ, **settings.to_env()},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _scrape(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> str:
    """``url``'s exposition once the process serves it (no redirect followed: Prometheus
    scrapes the path it is configured with)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                assert response.headers["content-type"].startswith("text/plain"), url
                return response.text
        assert time.monotonic() < deadline, f"{url} not served in {timeout_s}s"
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_every_series_the_rules_and_dashboards_read_is_exported(
    topics: Settings, tmp_path: Path
) -> None:
    # The job that scrapes each compose service: its path, and the port it expects.
    jobs = {
        name: (job.get("metrics_path", "/metrics"), sd["port"])
        for job in scrape_jobs().values()
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    # Each worker service with the roles compose gives it, and the API, on ports of their own.
    exported: set[str] = set()
    with contextlib.ExitStack() as stack:
        scrapes = []
        for name, spec in worker_services().items():
            roles = spec["environment"]["L2LOOP_WORKER_ROLES"]
            settings = topics.model_copy(update={"worker_roles": roles, "web_port": free_port()})
            log = tmp_path / f"{name}.log"
            process = stack.enter_context(_running(["worker"], settings, log))
            path, _ = jobs[name]
            scrapes.append((f"http://127.0.0.1:{settings.web_port}{path}", process, log))
        path, scraped_port = jobs["api"]
        assert api_port(services()["api"]) == scraped_port
        port = free_port()
        log = tmp_path / "api.log"
        process = stack.enter_context(
            _running(["api", "--host", "127.0.0.1", "--port", str(port)], topics, log)
        )
        scrapes.append((f"http://127.0.0.1:{port}{path}", process, log))
        for url, process, log in scrapes:
            exported |= exported_names(_scrape(url, process, log, timeout_s=180))
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    read = {name for rule in rules() for name in metric_names(rule["expr"])}
    read |= {name for query in dashboard_queries() for name in metric_names(query)}
    assert {"l2loop_events_scored_total", "l2loop_window_canary_fp_rate"} <= read
    missing = read - exported - recorded - PROMETHEUS_SERIES
    assert not missing, sorted(missing)
