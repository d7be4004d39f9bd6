"""The one settings object. Everything else receives its values explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from l2loop.resilience import Backoff
from l2model.artifacts import default_model_dir

LogLevel = Literal["crit", "error", "warn", "info", "debug"]


class Settings(BaseSettings):
    """Read once from the environment (prefix ``L2LOOP_``) and passed down, frozen."""

    model_config = SettingsConfigDict(env_prefix="L2LOOP_", frozen=True, extra="ignore")

    # Services. Unset means "start the embedded broker / Redis" (see l2loop.embedded).
    kafka_broker: str | None = Field(
        None, description="kafka://host:port[,kafka://host:port...] or bare host:port"
    )
    redis_url: SecretStr | None = Field(None, description="redis://[:password@]host:port/db")

    # Topics
    topic_prefix: str = "l2."
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)

    # Faust worker
    app_id: str = "l2loop"
    web_port: int = Field(6066, ge=0, le=65535)
    data_dir: Path = Path("var")
    log_level: LogLevel = "info"
    # Some brokers (Tansu) finish a group join only after half the session timeout, so a
    # short one keeps start-up and failover fast; 6 s is Kafka's default minimum.
    session_timeout_s: float = Field(6.0, ge=1.0)

    # Scoring
    model_dir: Path = Field(default_factory=default_model_dir)
    batch_size: int = Field(256, ge=1, le=10_000)
    batch_within_s: float = Field(0.02, gt=0)
    inference_threads: int = Field(2, ge=1)
    model_max_chars: int = Field(4096, ge=1)
    block_score: float = Field(0.85, gt=0, le=1)
    verdict_ttl_s: int = Field(8 * 24 * 3600, ge=60)

    # Model registry: versions on storage every worker reads, the current one named in Redis.
    registry_dir: Path = Path("var/models/registry")
    model_poll_s: float = Field(1.0, gt=0)

    # Resilience (l2loop.resilience): how long a starting process waits for the broker and
    # Redis, the backoff of every retried write, and how long a graceful stop may take.
    startup_timeout_s: float = Field(60.0, gt=0)
    retry_initial_s: float = Field(0.1, gt=0)
    retry_cap_s: float = Field(5.0, gt=0)
    shutdown_timeout_s: float = Field(8.0, gt=0)

    # The HTTP service (`l2loop api`)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)

    # User reports (streams/reports.py, streams/report_admission.py, l2loop/api/reports.py)
    report_batch_max: int = Field(500, ge=1, description="most reports in one POST")
    report_high_confidence_score: float = Field(
        0.9, gt=0, le=1, description="an FP report on an event scored at or above goes to review"
    )
    report_quorum: int = Field(
        3,
        ge=2,
        description="distinct reporters (a second tenant counts as one more) that "
        "make a curated example production-confirmed",
    )
    report_quota_window_s: int = Field(3600, ge=1)
    report_quota_per_reporter: int = Field(50, ge=1, description="reports per window")
    report_quota_per_tenant: int = Field(5000, ge=1, description="reports per window")
    report_keep_s: int = Field(
        90 * 24 * 3600, ge=60, description="how long outcomes and duplicate guards are kept"
    )
    # Text keys (l2model.record.text_key) of the golden set, one a line: never curated.
    golden_keys_path: Path | None = None

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic_fragment(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("topic_prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` entries for aiokafka, from either accepted broker form."""
        if not self.kafka_broker:
            raise RuntimeError("no Kafka broker configured (L2LOOP_KAFKA_BROKER is unset)")
        servers = []
        for part in self.kafka_broker.replace(";", ",").split(","):
            part = part.strip()
            if part:
                servers.append(part.removeprefix("kafka://"))
        return servers

    @property
    def backoff(self) -> Backoff:
        return Backoff(initial_s=self.retry_initial_s, cap_s=self.retry_cap_s)

    @property
    def faust_broker(self) -> list[str]:
        return [f"l2kafka://{server}" for server in self.bootstrap_servers]

    @property
    def redis_dsn(self) -> str:
        if self.redis_url is None:
            raise RuntimeError("no Redis configured (L2LOOP_REDIS_URL is unset)")
        return self.redis_url.get_secret_value()

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def with_services(self, kafka_broker: str, redis_url: str) -> Settings:
        return self.model_copy(
            update={"kafka_broker": kafka_broker, "redis_url": SecretStr(redis_url)}
        )

    def to_env(self) -> dict[str, str]:
        """The environment that recreates these settings in a child process."""
        env = {}
        for name, value in self:
            if value is None:
                continue
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"L2LOOP_{name.upper()}"] = text
        return env
