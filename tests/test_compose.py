"""docker-compose.yml and its monitoring configuration (decisions 0017, 0028): nothing open
by default (no published Kafka, Redis or S3 port, secrets with no default), a Kafka cluster
that survives a broker down, only settings that exist, and monitoring wired to what the
services serve."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from l2loop.settings import Settings
from streams.alert_rules import RULES
from tests.fixtures.deploy import (
    ALERTMANAGER,
    COMPOSE,
    CONFIG_DIRS,
    GRAFANA,
    PROMETHEUS,
    REQUIRED,
    api_port,
    compose,
    dashboards,
    interpolated,
    l2loop_services,
    load_yaml,
    rule_files,
    rules,
    scrape_jobs,
    services,
    web_port,
    worker_services,
)
from tests.fixtures.paths import REPOSITORY

BROKERS = ("kafka-1", "kafka-2", "kafka-3")
STATE = (*BROKERS, "redis", "seaweedfs")


def test_the_stack_has_its_services() -> None:
    assert set(services()) == {
        *STATE,
        "seaweedfs-bucket",
        "scorer",
        "loop-worker",
        "canary",
        "api",
        "scheduler",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    roles = {n: s["environment"].get("L2LOOP_WORKER_ROLES") for n, s in worker_services().items()}
    assert roles == {"scorer": "score,reports", "loop-worker": "windows,alerts,curated"}


def test_state_publishes_no_port_and_the_rest_only_on_loopback() -> None:
    found = services()
    assert not [name for name in STATE if "ports" in found[name]]
    published = {name: s["ports"] for name, s in found.items() if "ports" in s}
    assert set(published) == {"api", "grafana", "prometheus", "alertmanager"}
    for name, ports in published.items():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), name


def test_every_file_compose_mounts_is_in_the_repository() -> None:
    mounts = [v.split(":")[0] for s in services().values() for v in s.get("volumes", [])]
    binds = [REPOSITORY / m for m in mounts if m.startswith("./")]
    assert binds
    assert all(path.exists() for path in binds), [p for p in binds if not p.exists()]


def test_the_scorers_scale_without_fixed_names_or_ports() -> None:
    scorer = services()["scorer"]
    assert "container_name" not in scorer and "ports" not in scorer
    assert scorer["deploy"]["replicas"] >= 2


def test_three_brokers_with_one_quorum_and_writes_that_survive_one_down() -> None:
    found = services()
    brokers = {name: found[name]["environment"] for name in BROKERS}
    ids = {name: env["KAFKA_NODE_ID"] for name, env in brokers.items()}
    assert sorted(ids.values()) == [1, 2, 3]
    controller = {env["KAFKA_LISTENERS"] for env in brokers.values()}
    (listeners,) = controller
    controller_port = re.search(r"CONTROLLER://:(\d+)", listeners)
    assert controller_port is not None
    voters = ",".join(f"{ids[name]}@{name}:{controller_port[1]}" for name in BROKERS)
    for name, env in brokers.items():
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters, name
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092", name
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
        # Each node keeps its log on a volume of its own.
        assert [v.split(":")[0] for v in found[name]["volumes"]] == [name], name
    assert len({env["CLUSTER_ID"] for env in brokers.values()}) == 1
    for env in brokers.values():
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == len(BROKERS)
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == len(BROKERS)
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == len(BROKERS)
        # One broker down leaves two in sync: acks=all writes still succeed.
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == len(BROKERS) - 1
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == len(BROKERS) - 1


def test_l2loop_reaches_every_broker_and_replicates_its_topics_on_all() -> None:
    every = [f"kafka://{name}:9092" for name in BROKERS]
    for name, spec in l2loop_services().items():
        env = spec["environment"]
        assert env["L2LOOP_KAFKA_BROKER"].split(",") == every, name
        assert env["L2LOOP_REPLICATION_FACTOR"] == len(BROKERS), name
        assert set(spec["depends_on"]) == {*BROKERS, "redis", "seaweedfs-bucket"}, name


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert [volume.split(":")[1] for volume in redis["volumes"]] == ["/data"]


def test_redis_requires_a_password_that_has_no_default() -> None:
    found = services()
    command = found["redis"]["command"]
    password = _required(command[command.index("--requirepass") + 1])
    assert _required(found["redis"]["environment"]["REDISCLI_AUTH"]) == password
    # As compose interpolates it, every l2loop service's Redis URL carries that password.
    values = {password: "0123abcd"}
    for service, spec in l2loop_services().items():
        url = interpolated(spec["environment"]["L2LOOP_REDIS_URL"], values)
        assert urlsplit(url).password == "0123abcd", service


def test_grafana_requires_an_admin_password_that_has_no_default() -> None:
    grafana = services()["grafana"]["environment"]
    assert _required(grafana["GF_SECURITY_ADMIN_PASSWORD"])
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def _required(value: str) -> str:
    """The compose variable ``value`` is, which must have no default."""
    required = REQUIRED.fullmatch(value)
    assert required is not None, f"{value}: an unset secret must stop compose, not empty it"
    return required["name"]


def _s3_keys() -> tuple[str, str]:
    """The compose variables of the S3 store's access key id and secret key."""
    env = services()["seaweedfs-bucket"]["environment"]
    return _required(env["AWS_ACCESS_KEY_ID"]), _required(env["AWS_SECRET_ACCESS_KEY"])


def test_the_s3_store_admits_only_keys_that_have_no_default() -> None:
    key_id, secret = _s3_keys()
    values = {key_id: "AKID0123", secret: "s3cr3t0123"}
    # SeaweedFS's identities, as compose writes them into the mounted file.
    content = compose()["configs"]["seaweedfs-s3"]["content"]
    (identity,) = yaml.safe_load(interpolated(content, values))["identities"]
    assert identity["credentials"] == [{"accessKey": "AKID0123", "secretKey": "s3cr3t0123"}]
    seaweedfs = services()["seaweedfs"]
    (mounted,) = seaweedfs["configs"]
    assert f"-s3.config={mounted['target']}" in seaweedfs["command"]
    assert mounted["source"] == "seaweedfs-s3"
    for name, spec in l2loop_services().items():
        env = spec["environment"]
        assert _required(env["L2LOOP_S3_ACCESS_KEY_ID"]) == key_id, name
        assert _required(env["L2LOOP_S3_SECRET_ACCESS_KEY"]) == secret, name


def test_l2loop_shares_its_state_on_the_bucket_the_one_shot_creates() -> None:
    seaweedfs, bucket = services()["seaweedfs"], services()["seaweedfs-bucket"]
    s3_port = next(a.split("=")[1] for a in seaweedfs["command"] if a.startswith("-s3.port="))
    assert bucket["environment"]["AWS_ENDPOINT_URL"] == f"http://seaweedfs:{s3_port}"
    assert bucket["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    created = re.findall(r"--bucket (\S+)", " ".join(bucket["command"]))
    assert len(set(created)) == 1
    for name, spec in l2loop_services().items():
        env = spec["environment"]
        assert urlsplit(env["L2LOOP_STORE_URL"]).netloc == created[0], name
        assert env["L2LOOP_S3_ENDPOINT"] == f"http://seaweedfs:{s3_port}", name
        # No volume carries shared state any more; each container has its scratch directory.
        assert "volumes" not in spec, name


def test_every_l2loop_service_environment_is_valid_settings() -> None:
    values = {name: "x0123" for name in re.findall(r"\$\{(\w+)", COMPOSE.read_text())}
    for name, spec in l2loop_services().items():
        fields = {
            key.removeprefix("L2LOOP_").lower(): interpolated(str(value), values)
            for key, value in spec["environment"].items()
        }
        # Settings ignores unknown names, so they are looked for first.
        assert fields.keys() <= Settings.model_fields.keys(), name
        Settings(**fields)  # raises on a value the setting refuses


def test_workers_serve_health_and_metrics_to_their_network() -> None:
    workers = worker_services()
    assert workers
    for name, spec in workers.items():
        assert spec["environment"]["L2LOOP_WEB_BIND"] == "0.0.0.0", name


def test_every_l2loop_variable_in_compose_and_its_configuration_is_a_setting() -> None:
    known = {f"L2LOOP_{name.upper()}" for name in Settings.model_fields}
    files = [COMPOSE, *(p for d in CONFIG_DIRS for p in d.rglob("*") if p.is_file())]
    used = {v for path in files for v in re.findall(r"\bL2LOOP_[A-Z0-9_]+\b", path.read_text())}
    assert used
    assert used <= known, sorted(used - known)


def test_prometheus_scrapes_every_replica_of_every_worker_and_the_api() -> None:
    jobs = scrape_jobs()
    discovered: dict[tuple[str, int], str] = {}
    for job in jobs.values():
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A", job["job_name"]
            discovered.update(
                {(name, sd["port"]): job.get("metrics_path", "/metrics") for name in sd["names"]}
            )
    for name, spec in worker_services().items():
        assert discovered.get((name, web_port(spec))) == "/metrics", name
    api = services()["api"]
    # The API mounts its metrics app at /metrics, which serves under /metrics/ (the bare path
    # redirects); tests/test_monitoring.py scrapes it there.
    assert discovered.get(("api", api_port(api))) == "/metrics/"


def test_prometheus_alerts_to_the_alertmanager_the_loop_worker_posts_to() -> None:
    (alerting,) = load_yaml(PROMETHEUS)["alerting"]["alertmanagers"]
    (static,) = alerting["static_configs"]
    (target,) = static["targets"]
    assert "alertmanager" in services()
    url = services()["loop-worker"]["environment"]["L2LOOP_ALERTMANAGER_URL"]
    assert url == f"http://{target}"


def test_rule_files_exist_and_every_rule_is_well_formed() -> None:
    assert rule_files() and all(path.is_file() for path in rule_files())
    found = list(rules())
    alerts = [rule for rule in found if "alert" in rule]
    assert len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in found:
        assert ("alert" in rule) != ("record" in rule) and rule["expr"].strip(), rule
    for rule in alerts:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["labels"]["service"] == "l2loop", rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


# Prometheus's mirror of each of l2loop's rules, the setting its threshold comes from, and that
# setting's unit in the expression (latency: milliseconds in settings, seconds in PromQL).
MIRRORS = {
    "fp_rate_spike": ("L2loopFpRateHigh", "alert_fp_rate", 1.0),
    "recall_drop": ("L2loopRecallLow", "alert_recall", 1.0),
    "latency_p95": ("L2loopModelLatencyP95High", "alert_latency_p95_ms", 0.001),
    "error_rate": ("L2loopErrorRateHigh", "alert_error_rate", 1.0),
    "flag_rate_shift": ("L2loopFlagRateShift", "alert_flag_rate_band_floor", 1.0),
}


def _numbers(expr: str) -> set[float]:
    return {float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", expr)}


def test_every_rule_of_the_loop_has_a_mirror_at_the_settings_threshold() -> None:
    assert set(MIRRORS) == set(RULES)
    by_name = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    for rule, (mirror, setting, scale) in MIRRORS.items():
        default: float = Settings.model_fields[setting].default
        assert default * scale in _numbers(by_name[mirror]["expr"]), (rule, mirror)


def test_alertmanager_holds_back_each_mirror_while_l2loops_own_alert_fires() -> None:
    inhibits = load_yaml(ALERTMANAGER)["inhibit_rules"]
    pairs = {
        (_alertname(rule["source_matchers"]), _alertname(rule["target_matchers"]))
        for rule in inhibits
    }
    assert pairs == {(rule, mirror) for rule, (mirror, _, _) in MIRRORS.items()}
    receivers = {r["name"] for r in load_yaml(ALERTMANAGER)["receivers"]}
    assert load_yaml(ALERTMANAGER)["route"]["receiver"] in receivers


def _alertname(matchers: list[str]) -> str:
    (name,) = [m.split("=", 1)[1].strip('"') for m in matchers if m.startswith("alertname=")]
    return name


def test_grafana_provisions_the_dashboards_on_the_prometheus_it_names() -> None:
    (source,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services()
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "l2loop.yml")["providers"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services()["grafana"]["volumes"]}
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    boards = dashboards()
    assert boards
    for path, board in boards.items():
        panels: list[dict[str, Any]] = board["panels"]
        assert panels, path
        for panel in panels:
            for target in [panel, *panel["targets"]]:
                assert target["datasource"]["uid"] == source["uid"], (path, panel["title"])
