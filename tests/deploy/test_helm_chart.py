"""deploy/helm/l2loop, rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK; no
cluster, no helm binary) under several sets of values: every manifest valid against the
Kubernetes API schemas (kubernetes-validate), the KEDA and Prometheus-operator objects checked
structurally (their CRDs are not in those schemas), and the chart agreeing with the code:
settings that exist, the worker's port and probe paths, the score agent's consumer group and
topic, a grace period longer than the worker's shutdown bound."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from l2loop.infra.topics import SCAN_EVENTS
from l2loop.settings import Settings
from l2loop.streams.app import ROLES, split_readers
from l2loop.streams.consumer import consumer_group
from tests.fixtures.paths import REPOSITORY
from tests.streams.test_readiness import LIVENESS_PATH, READINESS_PATH

CHART = REPOSITORY / "deploy" / "helm" / "l2loop"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Objects of custom resources: not in the Kubernetes schemas, checked below.
CUSTOM_API_GROUPS = ("keda.sh/", "monitoring.coreos.com/")

# What an install must give (the chart renders nothing without them).
REQUIRED: dict[str, Any] = {
    "kafka": {"broker": "kafka-0.kafka:9092,kafka://kafka-1.kafka:9092"},
    "store": {"url": "s3://l2loop-shared/prod", "endpoint": "https://minio.storage:9000"},
    "secrets": {
        "redisUrl": "redis://:s3cret@redis:6379/0",
        "s3AccessKeyId": "AKIA0000",
        "s3SecretAccessKey": "shh",
    },
}

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "keda-off": {"keda": {"enabled": False}},
    "autoscaling-off": {"scorer": {"autoscaling": {"enabled": False}}},
    "existing-secret": {"existingSecret": "l2loop-credentials", "secrets": {"redisUrl": ""}},
    "extras": {
        "appId": "fraud",
        "topicPrefix": "prod.",
        "partitions": 6,
        "worker": {"webPort": 7077},
        "api": {"port": 9090},
        "shutdownTimeoutSeconds": 30,
        "startupTimeoutSeconds": 120,
        "serviceMonitor": {"enabled": True},
        "keda": {"authenticationRef": "kafka-sasl"},
        "extraConfig": {"L2LOOP_ALERTMANAGER_URL": "http://alertmanager.monitoring:9093"},
        "networkPolicy": {
            "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
            "egress": {"extra": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
        },
    },
    "no-network-policy": {"networkPolicy": {"enabled": False}},
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="l2loop", namespace="l2loop")
    return [
        document
        for text in rendered.values()
        for document in yaml.safe_load_all(text)
        if document is not None
    ]


class Rendered:
    """One rendering's objects, with the look-ups the tests share."""

    def __init__(self, variant: str) -> None:
        self.values = merged(REQUIRED, VARIANTS[variant])
        self.objects = render(self.values)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found

    def containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for deployment in self.of_kind("Deployment"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                yield deployment, container

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The L2LOOP_* variables the container gets, from its ConfigMap, Secret and env."""
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            if "configMapRef" in source:
                env.update(self.one("ConfigMap", source["configMapRef"]["name"])["data"])
            elif not self.values.get("existingSecret"):
                env.update(self.one("Secret", source["secretRef"]["name"])["stringData"])
        env.update({e["name"]: e["value"] for e in container.get("env", [])})
        return {name: value for name, value in env.items() if name.startswith("L2LOOP_")}

    def settings(self, container: dict[str, Any]) -> Settings:
        env = self.environment(container)
        return Settings.model_validate(
            {name.removeprefix("L2LOOP_").lower(): value for name, value in env.items()}
        )


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param)


def test_helm_lints_the_chart_clean() -> None:
    report = helm.lint(CHART, REQUIRED, strict=True)
    assert not report["errors"], report
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize("missing", ["kafka", "store", "secrets"])
def test_an_install_without_its_services_does_not_render(missing: str) -> None:
    # Unset, a worker would start an embedded broker or Redis of its own, or keep shared
    # state on a disk no other pod sees.
    values = {key: value for key, value in REQUIRED.items() if key != missing}
    with pytest.raises(helm.HelmRenderError, match="is required"):
        render(values)


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: Rendered) -> None:
    checked = 0
    for obj in rendered.objects:
        if obj["apiVersion"].startswith(CUSTOM_API_GROUPS):
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 10


def test_every_l2loop_variable_is_a_setting_and_every_process_gets_valid_settings(
    rendered: Rendered,
) -> None:
    fields = Settings.model_fields
    for deployment, container in rendered.containers():
        env = rendered.environment(container)
        unknown = [n for n in env if n.removeprefix("L2LOOP_").lower() not in fields]
        assert not unknown, (deployment["metadata"]["name"], unknown)
        settings = rendered.settings(container)
        assert settings.kafka_broker and settings.store_url, deployment["metadata"]["name"]
        if not rendered.values.get("existingSecret"):
            assert settings.redis_url is not None


def test_the_secret_comes_from_the_chart_or_the_existing_one(rendered: Rendered) -> None:
    existing = rendered.values.get("existingSecret")
    secrets = rendered.of_kind("Secret")
    assert (not secrets) if existing else len(secrets) == 1
    name = existing or "l2loop"
    for _, container in rendered.containers():
        refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert refs == [name]
    # Nothing secret in the ConfigMap.
    (config,) = rendered.of_kind("ConfigMap")
    assert not {"L2LOOP_REDIS_URL", "L2LOOP_S3_SECRET_ACCESS_KEY"} & set(config["data"])


def test_workers_and_the_api_are_probed_where_they_answer(rendered: Rendered) -> None:
    by_component = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: c for d, c in rendered.containers()
    }
    assert set(by_component) == {"scorer", "loop-worker", "api", "scheduler"}
    for component in ("scorer", "loop-worker"):
        container = by_component[component]
        settings = rendered.settings(container)
        assert settings.web_bind == "0.0.0.0"
        (port,) = container["ports"]
        assert port["containerPort"] == settings.web_port
        assert container["command"] == ["l2loop", "worker"]
        # The paths tests/streams/test_readiness.py asks a real worker on.
        assert container["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": "http"}
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": LIVENESS_PATH, "port": "http"}
    api = by_component["api"]
    (port,) = api["ports"]
    assert api["command"] == [
        "l2loop",
        "api",
        "--host",
        "0.0.0.0",
        "--port",
        str(port["containerPort"]),
    ]
    # The API's one health path (l2loop/api/app.py).
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert api[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "ports" not in by_component["scheduler"]
    roles = {c: rendered.settings(by_component[c]).roles for c in ("scorer", "loop-worker")}
    assert roles == {
        "scorer": ("score", "reports"),
        "loop-worker": ("windows", "alerts", "curated"),
    }
    # Between them every role, and no topic split across two groups of roles (decision 0015).
    assert {*roles["scorer"], *roles["loop-worker"]} == set(ROLES)
    assert not split_readers(roles["scorer"]) and not split_readers(roles["loop-worker"])


def test_services_reach_the_ports_the_processes_listen_on(rendered: Rendered) -> None:
    ports = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: c["ports"][0]["containerPort"]
        for d, c in rendered.containers()
        if "ports" in c
    }
    for service in rendered.of_kind("Service"):
        component = service["spec"]["selector"]["app.kubernetes.io/component"]
        (port,) = service["spec"]["ports"]
        assert port["port"] == ports[component] and port["targetPort"] == "http"


def test_pods_outlast_the_shutdown_and_startup_bounds(rendered: Rendered) -> None:
    for deployment, container in rendered.containers():
        settings = rendered.settings(container)
        spec = deployment["spec"]["template"]["spec"]
        # SIGTERM drains and commits within the shutdown bound; Kubernetes must not SIGKILL
        # before.
        assert spec["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s
        if "startupProbe" in container:
            probe = container["startupProbe"]
            allowed = probe["periodSeconds"] * probe["failureThreshold"]
            assert allowed > settings.startup_timeout_s, deployment["metadata"]["name"]


def test_pods_run_unprivileged_on_a_read_only_root(rendered: Rendered) -> None:
    (account,) = rendered.of_kind("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for deployment, container in rendered.containers():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
        # The data directory is local scratch on an emptyDir; shared state is on the store.
        data_dir = str(rendered.settings(container).data_dir)
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["emptyDir"] == {}


def test_scorers_scale_on_the_score_groups_lag_up_to_the_partitions(rendered: Rendered) -> None:
    scaled = rendered.of_kind("ScaledObject")
    hpas = rendered.of_kind("HorizontalPodAutoscaler")
    scorer = rendered.one("Deployment", "l2loop-scorer")
    (container,) = scorer["spec"]["template"]["spec"]["containers"]
    settings = rendered.settings(container)
    autoscaling = rendered.values.get("scorer", {}).get("autoscaling", {}).get("enabled", True)
    keda = rendered.values.get("keda", {}).get("enabled", True)
    if not autoscaling:
        assert not scaled and not hpas
        assert scorer["spec"]["replicas"] >= 1
        return
    # The autoscaler owns the count: an upgrade must not reset it.
    assert "replicas" not in scorer["spec"]
    if keda:
        # KEDA makes the HPA itself: a second one would fight it.
        assert not hpas
        (obj,) = scaled
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] == scorer["metadata"]["name"]
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= settings.partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert metadata["consumerGroup"] == consumer_group(settings, "score")
        assert metadata["topic"] == settings.topic(SCAN_EVENTS)
        assert metadata["bootstrapServers"].split(",") == settings.bootstrap_servers
        assert int(metadata["lagThreshold"]) > 0
        reference = rendered.values.get("keda", {}).get("authenticationRef")
        assert trigger.get("authenticationRef") == ({"name": reference} if reference else None)
    else:
        assert not scaled
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"]["name"] == scorer["metadata"]["name"]
        assert hpa["spec"]["maxReplicas"] <= settings.partitions
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_more_scorers_than_partitions_are_never_scheduled() -> None:
    for keda, kind, key in (
        (True, "ScaledObject", "maxReplicaCount"),
        (False, "HorizontalPodAutoscaler", "maxReplicas"),
    ):
        values = merged(
            REQUIRED,
            {
                "partitions": 3,
                "keda": {"enabled": keda},
                "scorer": {"autoscaling": {"maxReplicas": 40}},
            },
        )
        (obj,) = [o for o in render(values) if o["kind"] == kind]
        assert obj["spec"][key] == 3


def test_disruption_budgets_cover_the_replicated_components(rendered: Rendered) -> None:
    deployments = {d["metadata"]["name"]: d for d in rendered.of_kind("Deployment")}
    budgets = rendered.of_kind("PodDisruptionBudget")
    covered = set()
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        (name,) = [
            n for n, d in deployments.items() if d["spec"]["selector"]["matchLabels"] == selector
        ]
        covered.add(name)
    assert covered == {"l2loop-scorer", "l2loop-api"}


def test_network_policies_open_only_the_served_ports(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    if not rendered.values.get("networkPolicy", {}).get("enabled", True):
        assert not policies
        return
    ports = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: {
            p["containerPort"] for p in c.get("ports", [])
        }
        for d, c in rendered.containers()
    }
    assert len(policies) == len(ports)
    for policy in policies:
        component = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert opened == ports[component], component
        if component in ("scorer", "loop-worker"):
            (rule,) = policy["spec"]["ingress"]
            (scraper,) = rule["from"]
            assert {"namespaceSelector", "podSelector"} <= set(scraper)
        egress_ports = {
            p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])
        }
        assert {53, 9092, 6379, 443} <= egress_ports


def test_the_service_monitor_scrapes_the_metrics_services(rendered: Rendered) -> None:
    monitors = rendered.of_kind("ServiceMonitor")
    if not rendered.values.get("serviceMonitor", {}).get("enabled"):
        assert not monitors
        return
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "30s"}
    selector = monitor["spec"]["selector"]
    (components,) = selector["matchExpressions"]
    for service in rendered.of_kind("Service"):
        labels = service["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] in components["values"]
