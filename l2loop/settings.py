"""The one settings object. Everything else receives its values explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from l2loop.resilience import Backoff
from l2loop.schemas.dead_letters import MAX_RAW_BYTES
from l2loop.schemas.rollout import parse_stages
from l2model.artifacts import default_model_dir

LogLevel = Literal["crit", "error", "warn", "info", "debug"]
WORKER_ROLES = ("score", "reports", "windows", "alerts", "curated")


class Settings(BaseSettings):
    """Read once from the environment (prefix ``L2LOOP_``) and passed down, frozen."""

    model_config = SettingsConfigDict(env_prefix="L2LOOP_", frozen=True, extra="ignore")

    # Services. Unset means "start the embedded broker / Redis" (see l2loop.infra.embedded).
    kafka_broker: str | None = Field(
        None, description="kafka://host:port[,kafka://host:port...] or bare host:port"
    )
    redis_url: SecretStr | None = Field(None, description="redis://[:password@]host:port/db")

    # Topics
    topic_prefix: str = "l2."
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)

    # Faust worker. Roles: which agents this worker runs (comma-separated: score, reports,
    # windows, alerts, curated; "all" for every one), so that roles scale separately.
    worker_roles: str = "all"
    app_id: str = "l2loop"
    web_port: int = Field(6066, ge=0, le=65535)
    # Where the worker's web server (/health, /metrics) listens: loopback, so that nothing is
    # open by default (decision 0017); a container sets 0.0.0.0 for its probes and scraper.
    web_bind: str = "127.0.0.1"
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
    # Unset: under the data directory (`registry_root`), so that it moves with it.
    registry_dir: Path | None = None
    model_poll_s: float = Field(1.0, gt=0)

    # Shared state (the curated store, datasets, the model registry): unset, on the local
    # filesystem under the data directory; ``s3://bucket[/prefix]``, on any S3-compatible
    # object store, so that workers on several machines share it (l2model.storage,
    # docs/decisions/0027-object-storage.md). Credentials: these, else the usual AWS_* ones.
    store_url: str | None = Field(None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    s3_endpoint: str | None = Field(None, description="http(s)://host:port of a non-AWS store")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Unsigned requests, for a store that takes anonymous ones (the embedded one, on loopback).
    s3_unsigned: bool = False
    # With no store_url: start an embedded S3 server (SeaweedFS, the dev extra) for the shared
    # state, as `make up` does; unset, the shared state is a local directory.
    embedded_s3: bool = False

    # Event-time windows (streams/windows.py, streams/window_store.py): tumbling windows of
    # this size; labels and late events update a window for `grace` after its event time;
    # an event time ahead of its producer's clock by more than the allowance is clamped;
    # record ids are kept this long to drop the scorer's at-least-once duplicates.
    window_size_s: int = Field(3600, ge=60)
    window_grace_s: int = Field(7 * 24 * 3600, ge=0)
    window_future_allowance_s: int = Field(300, ge=0)
    window_dedupe_ttl_s: int = Field(3 * 3600, ge=60)

    # Resilience (l2loop.resilience): how long a starting process waits for the broker and
    # Redis, the backoff of every retried write, and how long a graceful stop may take.
    startup_timeout_s: float = Field(60.0, gt=0)
    retry_initial_s: float = Field(0.1, gt=0)
    retry_cap_s: float = Field(5.0, gt=0)
    shutdown_timeout_s: float = Field(8.0, gt=0)

    # Hostile input and crash loops (schemas/dead_letters.py, streams/poison.py,
    # l2loop/infra/supervision.py; docs/decisions/0016-poison-pills.md).
    # A dead letter keeps at most this many raw bytes, with the value's length and sha256, so
    # that it fits its topic whatever arrived (the schema's own cap is MAX_RAW_BYTES).
    dead_letter_raw_max_bytes: int = Field(64 * 1024, ge=0, le=MAX_RAW_BYTES)
    # Unfinished attempts at one offset after which the next start dead-letters the record
    # unprocessed (poison_pill). A crashed batch counts one for every record in it, and a
    # suspect is then retried alone: 2 means "crashed its agent once on its own".
    poison_pill_attempts: int = Field(2, ge=2)
    # How long the worker's /health says failing after an agent dead-lettered a poison pill.
    poison_pill_health_s: float = Field(600.0, gt=0)
    # l2loop up: this many exits of one process within the window is a crash loop, and a
    # restarted process counts as recovered only once it has stayed up this long.
    crash_loop_exits: int = Field(3, ge=2)
    crash_loop_window_s: float = Field(300.0, gt=0)
    restart_stable_s: float = Field(30.0, gt=0)

    # Canary probes (workers/canary.py): golden-set prompts with known labels, sent to
    # scan-events as a tenant of their own, so that windows tell them from production; and
    # the demo's FP spike (l2loop/demo/spike.py), an over-sensitive copy of the model
    # registered under its own version and rolled out straight to a canary stage.
    canary_probes_per_min: float = Field(60.0, gt=0)
    canary_tenant_id: str = Field("l2loop-canary", pattern=r"^\S+$")
    canary_tick_s: float = Field(1.0, gt=0)
    golden_version: str = "v1"
    spike_threshold: float = Field(0.01, gt=0, lt=1)
    spike_model_version: str = Field("0.0.1", pattern=r"^\d+\.\d+\.\d+$")

    # The HTTP service (`l2loop api`)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)

    # Curated store, suppressions and text privacy (l2loop.stores.curated, curated_sink,
    # suppressions). The store lives under data_dir/curated.
    curated_batch_size: int = Field(500, ge=1)
    curated_batch_within_s: float = Field(0.5, gt=0)
    # Distinct reporters an accepted FP needs before it becomes a suppression for its tenant
    # (an example released in review needs none).
    suppression_quorum: int = Field(3, ge=2)
    # On: the store keeps only the hash of the text of an event the model did not flag (the
    # text of a false-negative report); off: it keeps the text to train on.
    hash_unflagged_texts: bool = False
    # Set: texts are dropped (only their hashes kept) once older than this where l2loop
    # stores them itself: verdict store, curated store files, suppressions (no preview), and
    # the retention of the topics that carry texts when l2loop creates them (README, Privacy).
    text_ttl_s: int | None = Field(None, ge=3600)
    # Alerts (streams/alerts.py, streams/alert_sinks.py). Thresholds: docs/architecture.md
    # "Rules of the loop". A rule fires when the Wilson 95 % bound of a window crosses its
    # threshold and clears at the lower one, so that a rate hovering at the threshold does
    # not flap.
    alert_min_samples: int = Field(100, ge=1, description="samples a window needs to alert")
    alert_fp_rate: float = Field(0.02, gt=0, lt=1)
    alert_fp_rate_clear: float = Field(0.015, ge=0, lt=1)
    alert_recall: float = Field(0.90, gt=0, le=1)
    alert_recall_clear: float = Field(0.92, gt=0, le=1)
    alert_latency_p95_ms: float = Field(5.0, gt=0, description="model time per prompt")
    alert_latency_p95_clear_ms: float = Field(4.0, gt=0)
    alert_error_rate: float = Field(0.001, gt=0, lt=1)
    alert_error_rate_clear: float = Field(0.0005, ge=0, lt=1)
    # flag_rate_shift: the band is the trailing windows' median flag rate plus or minus this
    # many robust deviations (1.4826 MAD), and never narrower than the floor on either side.
    alert_flag_rate_trailing: int = Field(24, ge=2, description="trailing windows (hours)")
    alert_flag_rate_min_trailing: int = Field(12, ge=2)
    alert_flag_rate_band_sigmas: float = Field(4.0, gt=0)
    alert_flag_rate_band_floor: float = Field(0.02, ge=0, lt=1)
    alert_flag_rate_clear_share: float = Field(0.75, gt=0, le=1, description="of the band")
    # Receivers. Each gets the state changes from a Redis outbox, so one that is down delays
    # its own deliveries and never the stream.
    alertmanager_url: str | None = Field(None, description="e.g. http://alertmanager:9093")
    alert_webhook_url: str | None = Field(None, description="Alertmanager webhook JSON is POSTed")
    alert_receiver_timeout_s: float = Field(5.0, gt=0)
    alert_resend_s: float = Field(60.0, gt=0, description="Alertmanager re-send while firing")
    alert_outbox_poll_s: float = Field(0.5, gt=0)
    alert_outbox_max: int = Field(10_000, ge=1, description="state changes kept per receiver")
    alert_history: int = Field(1_000, ge=1, description="state changes kept for the API")
    api_public_url: str | None = Field(None, description="the dashboard, as generatorURL")

    @model_validator(mode="after")
    def _alerts_clear_on_the_safe_side(self) -> Settings:
        # A clearing level on the wrong side of its threshold would resolve a firing alert
        # with the very reading that fired it.
        wrong = [
            name
            for name, ok in (
                ("alert_fp_rate_clear", self.alert_fp_rate_clear <= self.alert_fp_rate),
                ("alert_recall_clear", self.alert_recall_clear >= self.alert_recall),
                (
                    "alert_latency_p95_clear_ms",
                    self.alert_latency_p95_clear_ms <= self.alert_latency_p95_ms,
                ),
                ("alert_error_rate_clear", self.alert_error_rate_clear <= self.alert_error_rate),
            )
            if not ok
        ]
        if wrong:
            raise ValueError(f"clearing levels on the wrong side of their thresholds: {wrong}")
        return self

    # User reports (streams/reports.py, streams/defences/admission.py, l2loop/api/reports.py)
    report_batch_max: int = Field(500, ge=1, description="most reports in one POST")
    # The most bytes of a POST /v1/reports body; a larger one is answered 413 without being
    # read (Content-Length) or as soon as the stream passes it (chunked), so that no request
    # can make the API buffer and parse megabytes. 4 MiB fits a full batch (500) of reports
    # of 8 KiB each (ids, reason and a 2,000-character comment with room to spare); a batch
    # of long missed-attack texts is split by the client.
    api_max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    report_high_confidence_score: float = Field(
        0.9, gt=0, le=1, description="an FP report on an event scored at or above goes to review"
    )
    # Trust has units (docs/decisions/0018-trust-has-units.md): a quorum counts
    # authenticated principals (a tenant key is one, each operator-issued reporter key is
    # one), and production-confirmed also needs that many distinct tenants, so that no
    # single tenant can make a weight-5.0 example alone.
    report_quorum: int = Field(
        3,
        ge=2,
        description="distinct authenticated principals that make a curated example "
        "production-confirmed",
    )
    report_confirm_min_tenants: int = Field(
        2, ge=2, description="distinct tenants a production-confirmed example needs"
    )
    # The seen-event index (l2loop/stores/verdicts.py): how long after its hour an event the
    # model allowed can still be named by a false-negative claim that is then curated; a
    # claim it cannot verify goes to review. 0 keeps no index: every such claim is reviewed.
    seen_event_ttl_s: int = Field(2 * 24 * 3600, ge=0)
    report_quota_window_s: int = Field(3600, ge=1)
    report_quota_per_reporter: int = Field(50, ge=1, description="reports per window")
    report_quota_per_tenant: int = Field(5000, ge=1, description="reports per window")
    report_keep_s: int = Field(
        90 * 24 * 3600, ge=60, description="how long outcomes and duplicate guards are kept"
    )
    # Review groups (streams/defences/review_groups.py, docs/decisions/0020-review-groups.md): two
    # quarantined texts are neighbours, decided together, when the cosine of their character
    # 3-5-gram TF-IDF vectors reaches this. Measured on the golden set's texts: a text with a
    # quarter of its words replaced scores 0.85 (median; 5th percentile 0.68) against the
    # original, while 99.9 % of pairs of different texts stay below 0.56; at 0.6 a group is
    # "the same message, a few words changed", never merely the same topic.
    review_group_similarity: float = Field(0.6, gt=0, le=1)

    # Quarterly cycle: scheduler, retraining, loop replay (workers/scheduler.py,
    # workers/retrain.py, l2loop/demo/loop_replay.py, l2loop/replay/;
    # docs/decisions/0013-retraining-loop.md).
    # The cron (UTC) fires the cycle of the quarter before the firing; a run missed by less
    # than the grace still starts (several missed runs start once); the per-quarter lock
    # expires this long after its holder stops renewing it (it renews every third of it).
    scheduler_cron: str = "0 2 1 1,4,7,10 *"
    scheduler_misfire_grace_s: int = Field(6 * 3600, ge=1)
    scheduler_lock_ttl_s: int = Field(600, ge=10)
    # The cron's cycle retrains (and promotes on accept) after assembling; off: assembly only.
    scheduler_retrain: bool = True
    # "auto": the guide's rule, incremental below `retrain_full_from` new training examples,
    # full retraining from there. Incremental keeps the incumbent's graph and adds the new
    # examples to its memory (l2model.memory: a few reports change scores near them and
    # nowhere else); full refits everything at the recorded weights (decision 0019).
    retrain_mode: Literal["auto", "incremental", "full"] = "auto"
    retrain_full_from: int = Field(10_000, ge=1)
    # How much recall on known attacks (base validation attacks, confirmed threats) a
    # candidate may give up for fewer false positives: half a point, well inside the gate's
    # significance on a thousand attacks, so that learning never trades recall for FPs.
    retrain_recall_tolerance: float = Field(0.005, ge=0, lt=1)
    # The memory's prototypes: each confirmed example's heaviest TF-IDF features (64 keep the
    # gap between a report's neighbours and unrelated traffic that full vectors show, at 768
    # bytes of graph per example; decision 0019), and how far past the threshold, in logits,
    # each moves its own text (one logit: its odds cross the cut by a factor e).
    memory_features_per_example: int = Field(64, ge=8, le=4096)
    memory_margin: float = Field(1.0, gt=0)
    # The least weight a hard negative is trained with in a retraining set, base or new: the
    # guide's "increase weight for hard negative examples" (troubleshooting, "FPR increases
    # after update"; the hard negatives are what the gate must never flag), at the
    # expert weight of docs/architecture.md (production-confirmed 5.0, expert 3-4, synthetic
    # 2.0-2.5, bulk 1.0). Hand-written hard negatives are expert examples: the middle of 3-4.
    retrain_hard_negative_weight: float = Field(3.5, gt=0)
    # Full retraining adds, for each new or remembered example, this many already-labelled
    # records of the opposite label in its script, length and markup (l2model.counterparts),
    # so that a style the reports share by accident (a language) is not learned as the
    # label: the seeds' "for each new malicious pattern, add 2-3 benign variations", and
    # the reverse. Together they weigh what the example weighs, whatever their number.
    retrain_counterparts_per_example: int = Field(3, ge=1, le=20)
    # The base corpus every dataset is assembled against and every candidate is trained
    # with (l2model.corpus.generate_corpus): the one the committed model was built from.
    base_corpus_size: int = Field(25_000, ge=1_000)
    base_corpus_seed: int = 0
    # The counterfactual gate (l2model/gate/counterfactual.py, workers/traffic_sample.py;
    # docs/decisions/0021-counterfactual-gate.md): before promotion, candidate and model in
    # service score a sample of every tenant's recent scan events, read back from the topic.
    # At most `gate_traffic_sample` events (0: no replay, the rule is not measured), shared
    # fairly among tenants (each gets an equal share, a small tenant all of its events), of
    # the events no older than the lookback (the topic's retention); reading stops at the
    # newest `gate_traffic_max_read` records (split evenly over partitions) or after the
    # timeout, so that a busy topic bounds the run. The seed makes the sample reproducible.
    gate_traffic_sample: int = Field(5_000, ge=0)
    gate_traffic_lookback_s: int = Field(7 * 24 * 3600, ge=60)
    gate_traffic_max_read: int = Field(200_000, ge=1)
    gate_traffic_read_timeout_s: float = Field(300.0, gt=0)
    gate_traffic_seed: int = 0
    # An un-flag on a tenant that reported no FP is explained when its nearest reported
    # text is a false positive this similar (cosine of char 3-5-gram TF-IDF; decision 0021:
    # a tenant's own flips in the direction it reported are its word). 0.5 is where the
    # assembler's own paraphrases of a reported FP (what the candidate learns) start: on the
    # generated corpus 99 % of them are at 0.48 or above and 95 % at 0.64, while 90 % of
    # prompts have no prompt of the other label above 0.40 and 99.9 % of random pairs stay
    # below 0.53 (measured once on generate_corpus(3000, seed=7), no evaluation data).
    gate_flip_explain_similarity: float = Field(0.5, gt=0, le=1)
    # Unexplained flips a tenant (and the whole sample) may have before the candidate is
    # rejected: max(minimum, ceil(share * its sampled events)). The minimum keeps a small
    # tenant's sample from rejecting on one borderline prompt; 1 % is the seeds' own unit
    # of harm (the production FP target is < 1 %).
    gate_flip_budget: float = Field(0.01, ge=0, le=1)
    gate_flip_budget_min: int = Field(2, ge=0)
    # loop replay: the share of the model's errors on the replayed half that simulated users
    # report (FPs) and analysts report (misses), and the seed of the split and the draws.
    replay_report_share: float = Field(0.3, gt=0, le=1)
    replay_seed: int = 0

    # Releasing a model (l2loop/release/, streams/rollout_router.py; decision 0024). A
    # candidate the gate accepts is released through a staged rollout ("rollout") or made
    # current at once ("immediate"). Stages: "shadow" (the candidate scores every event and
    # acts on none), then rising percentages of events whose acting verdict it makes, ending
    # at 100; the split hashes the tenant (a tenant sees one model) or the event. A stage
    # advances once it has held this long, the candidate scored this many events and this
    # many canary probes in it, and every comparison with the incumbent holds: canary FP
    # rate and recall, reported FP rate (a rollback needs Wilson 99.9 % bounds apart by more
    # than the tolerance), each tenant's flags (more of them than the flip budget of its
    # events is harm; fewer are what reports ask for), model time p95 (at most the ratio of
    # the incumbent's, or under the latency alert; judged where both models score whole
    # batches) and error rate. A failed comparison, or an alert firing for the candidate's
    # version, rolls it back. Every score worker runs the analysis each tick;
    # the state in Redis makes one decision of their answers.
    promotion: Literal["rollout", "immediate"] = "rollout"
    rollout_stages: str = "shadow,10,50,100"
    rollout_hash_by: Literal["tenant", "event"] = "tenant"
    rollout_hold_s: float = Field(3600.0, ge=0)
    rollout_min_events: int = Field(1000, ge=1)
    rollout_min_canary: int = Field(100, ge=0)
    rollout_tolerance: float = Field(0.005, ge=0, lt=1)
    rollout_flip_budget: float = Field(0.02, gt=0, lt=1)
    # A tenant's flag rate is compared once it has this many events in the stage (and, at a
    # percentage stage, under the incumbent in the run): fewer are too noisy to judge.
    rollout_min_tenant_events: int = Field(100, ge=1)
    # Twice: a candidate that learnt reports carries a memory that costs time per prompt.
    rollout_latency_ratio: float = Field(2.0, ge=1)
    rollout_tick_s: float = Field(1.0, gt=0)

    @field_validator("rollout_stages")
    @classmethod
    def _stages_end_at_100(cls, value: str) -> str:
        parse_stages(value)
        return value

    # Dataset assembly (workers/assembler.py; docs/architecture.md "Rules of the loop", seeds:
    # incremental training guide). Weights: production-confirmed examples get the confirmed
    # weight, less-supported reports keep the report agent's weight within bulk..confirmed,
    # variations of a false positive get min + (max - min) * its confidence. The class ratio
    # (majority:minority) is counted over base corpus + dataset and reached by dropping
    # variations only. Fractions are train/val/test, cut per stratum; the seed orders groups
    # and draws variations.
    assembly_variations_per_fp: int = Field(5, ge=0, le=50)
    assembly_variation_weight_min: float = Field(2.0, gt=0)
    assembly_variation_weight_max: float = Field(2.5, gt=0)
    assembly_confirmed_weight: float = Field(5.0, gt=0)
    assembly_bulk_weight: float = Field(1.0, gt=0)
    assembly_max_class_ratio: float = Field(3.0, ge=1.0)
    assembly_train_fraction: float = Field(0.8, gt=0, lt=1)
    assembly_val_fraction: float = Field(0.1, ge=0, lt=1)
    assembly_test_fraction: float = Field(0.1, ge=0, lt=1)
    assembly_seed: int = 0
    assembly_progress_every: int = Field(100_000, ge=1, description="records per progress line")
    assembly_manifest_examples: int = Field(
        20, ge=0, description="rejected lines and conflicts listed in the manifest itself"
    )

    @model_validator(mode="after")
    def _assembly_shares_and_weights_make_sense(self) -> Settings:
        shares = (self.assembly_train_fraction, self.assembly_val_fraction)
        if abs(sum(shares) + self.assembly_test_fraction - 1.0) > 1e-9:
            raise ValueError("assembly train, val and test fractions must sum to 1")
        if self.assembly_variation_weight_min > self.assembly_variation_weight_max:
            raise ValueError("assembly_variation_weight_min is above _max")
        return self

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
    def registry_root(self) -> Path:
        """The model registry's directory: ``registry_dir``, else under the data directory."""
        return self.registry_dir or self.data_dir / "models" / "registry"

    @property
    def stored_verdict_ttl_s(self) -> int:
        """A stored verdict holds its text, so the text TTL bounds it too."""
        return min(self.verdict_ttl_s, self.text_ttl_s or self.verdict_ttl_s)

    @field_validator("worker_roles")
    @classmethod
    def _known_roles(cls, value: str) -> str:
        roles = {part.strip() for part in value.split(",") if part.strip()}
        unknown = roles - {"all", *WORKER_ROLES}
        if unknown or not roles:
            raise ValueError(f"roles are {', '.join(WORKER_ROLES)} or all; got {value!r}")
        return value

    @property
    def roles(self) -> tuple[str, ...]:
        """The worker's roles, in the order their agents are registered."""
        wanted = {part.strip() for part in self.worker_roles.split(",")}
        return WORKER_ROLES if "all" in wanted else tuple(r for r in WORKER_ROLES if r in wanted)

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
