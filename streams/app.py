"""The Faust application: one place that wires settings, codecs and agents together."""

from __future__ import annotations

import faust

import schemas.codec
import streams.transport  # noqa: F401  (registers the l2kafka:// transport)
from l2loop.settings import Settings
from streams.reports import register_report_agent
from streams.scoring import register_score_agent


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        store="memory://",
        autodiscover=False,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer=schemas.codec.CODEC_NAME,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Topics are created by streams.topics before the worker starts; the leader topic
        # would be the only one Faust declares itself, and no agent needs a leader.
        topic_disable_leader=True,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        producer_linger_ms=5,
        broker_commit_every=settings.batch_size * 4,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
    )
    register_score_agent(app, settings)
    register_report_agent(app, settings)
    return app
