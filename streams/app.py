"""The Faust application and worker: one place that wires settings, codecs and agents together.

Every worker also serves ``/health`` (its dependencies' state and crash loops,
l2loop.resilience: the liveness probe), ``/ready`` (200 once its consumers have joined their
groups, else 503 naming what it waits for: the readiness probe) and ``/metrics`` (Prometheus)
on its web port.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import l2loop.streams.transport  # noqa: F401  (registers the l2kafka:// transport)
from l2loop.infra.topics import (
    CURATED_EXAMPLES,
    LABEL_REPORTS,
    SCAN_EVENTS,
    SCAN_EVENTS_DLQ,
    SCAN_VERDICTS,
    WINDOW_STATS,
)
from l2loop.logs import logging_config
from l2loop.resilience import HEALTH, READINESS, exit_after
from l2loop.schemas.codec import CODEC_NAME
from l2loop.settings import Settings
from l2loop.streams.alerts import register_alert_agent
from l2loop.streams.consumer import assignment_of
from l2loop.streams.curated_sink import register_curated_sink
from l2loop.streams.reports import register_report_agent
from l2loop.streams.scoring import register_score_agent
from l2loop.streams.windows import register_window_agent


class RolesSplitError(ValueError):
    """The worker's roles leave out a role that reads one of their topics."""


def create_app(settings: Settings) -> faust.App:
    split = split_readers(settings.roles)
    if split:
        raise RolesSplitError("; ".join(split))
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        store="memory://",
        autodiscover=False,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer=CODEC_NAME,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Topics are created by l2loop.infra.topics before the worker starts; the leader topic
        # would be the only one Faust declares itself, and no agent needs a leader.
        topic_disable_leader=True,
        web_port=settings.web_port,
        # web_host only names the host in URLs; web_bind is where the server listens.
        web_host="127.0.0.1",
        web_bind=settings.web_bind,
        producer_linger_ms=5,
        broker_commit_every=settings.batch_size * 4,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
        # On stop or rebalance, do not wait for in-flight events to be acknowledged: a batch
        # held by an outage would make the worker wait forever. Unacknowledged offsets are
        # not committed, so the events are replayed (at-least-once).
        stream_wait_empty=False,
    )
    for role in settings.roles:
        ROLES[role](app, settings)
    if app.agents:
        _ready_after_first_assignment(app, settings.app_id)
    else:
        # The score role alone reads with a consumer of its own (l2loop.streams.consumer):
        # Faust's, subscribed to nothing, would refuse to start.
        app.boot_strategy = faust.app.base.BootStrategy(app, enable_kafka_consumer=False)
    _serve_probes_and_metrics(app)
    return app


def _ready_after_first_assignment(app: faust.App, group_id: str) -> None:
    """The worker is not ready before Faust's consumer has joined ``group_id`` (the score
    agent's consumer of its own waits for its group likewise, streams.consumer)."""
    part = assignment_of(group_id)
    READINESS.expect(part)

    # Sent after every assignment, an empty one too (more members than partitions).
    def assigned(sender: faust.App, *args: Any, **kwargs: Any) -> None:
        READINESS.arrived(part)

    # mode types its handlers with mypy_extensions' VarArg/NamedArg, which no def matches.
    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]


# What each worker role runs: one agent (with its timers) per role, so that roles scale
# apart (`L2LOOP_WORKER_ROLES=score,reports` on many workers, `windows,alerts,curated` on
# one, ...), as far as READS allows.
ROLES: dict[str, Callable[[faust.App, Settings], None]] = {
    "score": register_score_agent,
    "reports": register_report_agent,
    "windows": register_window_agent,
    "alerts": register_alert_agent,
    "curated": register_curated_sink,
}

# The topics each role's agent reads. Every worker joins one consumer group (the app id) and
# Kafka gives each partition of a topic to one member: two roles reading one topic, run in
# different workers, would each see only part of it (the window agent half the labels, the
# curated sink half the examples). So a worker runs every role that reads a topic it reads,
# and roles scale apart only where they share no topic (decision 0015).
READS: dict[str, tuple[str, ...]] = {
    "score": (SCAN_EVENTS,),
    "reports": (LABEL_REPORTS,),
    "windows": (SCAN_VERDICTS, SCAN_EVENTS_DLQ, CURATED_EXAMPLES),
    "alerts": (WINDOW_STATS,),
    "curated": (CURATED_EXAMPLES,),
}


def split_readers(roles: Sequence[str]) -> list[str]:
    """For each topic that ``roles`` read together with a role they leave out, what is wrong
    and what to run instead; empty when the roles are whole."""
    problems = []
    for topic in sorted({topic for role in roles for topic in READS[role]}):
        readers = [role for role in ROLES if topic in READS[role]]
        missing = [role for role in readers if role not in roles]
        if missing:
            problems.append(
                f"worker roles {','.join(roles)} leave out {','.join(missing)}, which also "
                f"reads {topic}: in one consumer group each would read only part of it; "
                f"run {','.join(sorted({*roles, *missing}, key=list(ROLES).index))} together"
            )
    return problems


def _serve_probes_and_metrics(app: faust.App) -> None:
    @app.page("/health")
    async def health(view: View, request: Request) -> Response:
        report = HEALTH.report()
        # 200 while degraded or failing too: an outage is waited out, a poison pill is
        # dead-lettered by the agent itself, and restarting would help with neither.
        return view.json(report.model_dump(mode="json"))

    @app.page("/ready")
    async def ready(view: View, request: Request) -> Response:
        report = READINESS.report()
        return view.json(report.model_dump(mode="json"), status=200 if report.ready else 503)

    @app.page("/metrics")
    async def metrics(view: View, request: Request) -> Response:
        # As a header: aiohttp refuses a content_type argument that carries a charset.
        return view.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class Worker(faust.Worker):
    """Faust's worker, with a bound on how long a signalled stop may take."""

    def __init__(self, app: faust.App, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            app,
            loglevel=settings.log_level,
            logging_config=logging_config(settings.log_level),
            **kwargs,
        )
        self._shutdown_timeout_s = settings.shutdown_timeout_s

    def _schedule_shutdown(self, signum: signal.Signals) -> None:
        # A graceful stop that hangs (a stuck task, a broker that does not answer the
        # leave-group) must not keep a stopped worker alive: past the bound, exit anyway.
        exit_after(self._shutdown_timeout_s, reason=f"signal {signum.name}")
        super()._schedule_shutdown(signum)
