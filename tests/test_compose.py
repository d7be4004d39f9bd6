"""docker-compose.yml opens nothing by default: no published Kafka or Redis port, a Redis
that requires a password with no default, and only settings that exist."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from l2loop.settings import Settings
from tests.fixtures.paths import REPOSITORY

COMPOSE = REPOSITORY / "docker-compose.yml"
REQUIRED = re.compile(r"\$\{(?P<name>\w+):\?[^}]*\}")
VARIABLE = re.compile(r"\$\{(?P<name>\w+)[^}]*\}")


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def l2loop_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("command", [""])[0] == "l2loop"}


def test_kafka_and_redis_publish_no_port_and_the_rest_only_on_loopback() -> None:
    found = services()
    assert "ports" not in found["kafka"] and "ports" not in found["redis"]
    published = {name: s["ports"] for name, s in found.items() if "ports" in s}
    assert published, "the API is published, on loopback"
    for name, ports in published.items():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), name


def test_redis_requires_a_password_that_has_no_default() -> None:
    found = services()
    command = found["redis"]["command"]
    required = REQUIRED.fullmatch(command[command.index("--requirepass") + 1])
    assert required is not None, "an unset password must stop compose, not empty it"
    assert REQUIRED.fullmatch(found["redis"]["environment"]["REDISCLI_AUTH"])
    # As compose interpolates it, every l2loop service's Redis URL carries that password.
    values = {required["name"]: "0123abcd"}
    for service, spec in l2loop_services().items():
        url = VARIABLE.sub(lambda m: values[m["name"]], spec["environment"]["L2LOOP_REDIS_URL"])
        assert urlsplit(url).password == "0123abcd", service


def test_workers_serve_health_and_metrics_to_their_network() -> None:
    workers = {n: s for n, s in l2loop_services().items() if s["command"][1] == "worker"}
    assert workers
    for name, spec in workers.items():
        assert spec["environment"]["L2LOOP_WEB_BIND"] == "0.0.0.0", name


def test_every_l2loop_variable_in_compose_is_a_setting() -> None:
    known = {f"L2LOOP_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"\bL2LOOP_[A-Z0-9_]+\b", COMPOSE.read_text()))
    assert used
    assert used <= known, sorted(used - known)
