"""Every topic of the loop, created up front with explicit partitions and configs.

Brokers may auto-create unknown topics with their own partition count, and Faust does not
create an agent's source topic; so the app creates all of them itself before any agent runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from l2loop.logs import get_logger
from l2loop.settings import Settings

log = get_logger(__name__)

DAY_MS = 24 * 3600 * 1000

SCAN_EVENTS = "scan-events"
SCAN_VERDICTS = "scan-verdicts"
# A shadow stage's candidate verdicts: apart, so that nothing that acts on verdicts reads them.
SCAN_VERDICTS_SHADOW = "scan-verdicts.shadow"
SCAN_EVENTS_DLQ = "scan-events.dlq"
LABEL_REPORTS = "label-reports"
LABEL_REPORTS_DLQ = "label-reports.dlq"
CURATED_EXAMPLES = "curated-examples"
REPORT_QUARANTINE = "report-quarantine"
WINDOW_STATS = "window-stats"
ALERTS = "alerts"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int | None  # None: the settings' default partition count
    config: dict[str, str] = field(default_factory=dict)
    # Records hold prompt texts: with a text TTL set, the topic keeps them no longer.
    carries_text: bool = False


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(SCAN_EVENTS, None, {"retention.ms": str(7 * DAY_MS)}, carries_text=True),
    TopicSpec(SCAN_VERDICTS, None, {"retention.ms": str(14 * DAY_MS)}),
    TopicSpec(SCAN_VERDICTS_SHADOW, None, {"retention.ms": str(14 * DAY_MS)}),
    # Dead letters are kept long enough for a person to look at them.
    TopicSpec(SCAN_EVENTS_DLQ, None, {"retention.ms": str(30 * DAY_MS)}, carries_text=True),
    TopicSpec(LABEL_REPORTS, None, {"retention.ms": str(30 * DAY_MS)}, carries_text=True),
    TopicSpec(LABEL_REPORTS_DLQ, None, {"retention.ms": str(30 * DAY_MS)}, carries_text=True),
    # The training record of truth: never expires (the curated store keeps it too).
    TopicSpec(CURATED_EXAMPLES, None, {"retention.ms": "-1"}, carries_text=True),
    TopicSpec(REPORT_QUARANTINE, None, {"retention.ms": "-1"}, carries_text=True),
    TopicSpec(WINDOW_STATS, None, {"retention.ms": str(30 * DAY_MS)}),
    TopicSpec(ALERTS, 1, {"retention.ms": str(90 * DAY_MS)}),
)


def topic_config(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    config = {"cleanup.policy": "delete", **spec.config}
    if spec.carries_text and settings.text_ttl_s is not None:
        ttl_ms = settings.text_ttl_s * 1000
        retention = int(config.get("retention.ms", "-1"))
        config["retention.ms"] = str(ttl_ms if retention < 0 else min(retention, ttl_ms))
    return config


def new_topics(settings: Settings) -> list[NewTopic]:
    return [
        NewTopic(
            name=settings.topic(spec.name),
            num_partitions=spec.partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs=topic_config(spec, settings),
        )
        for spec in TOPICS
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Creates the missing topics; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [topic for topic in new_topics(settings) if topic.name not in existing]
        created = []
        for topic in wanted:
            # One request per topic: a concurrent creator makes only its own topic fail.
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("topics_created", topics=",".join(created))
        return created
    finally:
        await admin.close()
