from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from l2loop.settings import Settings


@pytest.mark.parametrize(
    ("configured", "servers"),
    [
        ("kafka://a:9092", ["a:9092"]),
        ("a:9092", ["a:9092"]),
        ("kafka://a:9092,kafka://b:9093", ["a:9092", "b:9093"]),
        ("kafka://a:9092;b:9093", ["a:9092", "b:9093"]),
    ],
)
def test_broker_forms(configured: str, servers: list[str]) -> None:
    settings = Settings(kafka_broker=configured)
    assert settings.bootstrap_servers == servers
    assert settings.faust_broker == [f"l2kafka://{s}" for s in servers]


def test_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2LOOP_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("L2LOOP_REDIS_URL", "redis://:pw-h1dden@r:6379/2")
    monkeypatch.setenv("L2LOOP_S3_SECRET_ACCESS_KEY", "s3-h1dden")
    settings = Settings()
    assert settings.topic("scan-events") == "prod.scan-events"
    assert "h1dden" not in repr(settings)
    assert settings.redis_dsn == "redis://:pw-h1dden@r:6379/2"


def test_to_env_recreates_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        kafka_broker="a:1", redis_url="redis://r/0", topic_prefix="x.", batch_size=7
    )
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_the_registry_lives_under_the_data_directory_unless_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("L2LOOP_REGISTRY_DIR", raising=False)
    monkeypatch.setenv("L2LOOP_DATA_DIR", str(tmp_path / "data"))
    assert Settings().registry_root == tmp_path / "data" / "models" / "registry"
    # A child process started with to_env finds the same registry.
    moved = Settings().model_copy(update={"data_dir": tmp_path / "elsewhere"})
    for key, value in moved.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings().registry_root == tmp_path / "elsewhere" / "models" / "registry"
    monkeypatch.setenv("L2LOOP_REGISTRY_DIR", str(tmp_path / "shared" / "registry"))
    assert Settings().registry_root == tmp_path / "shared" / "registry"


def test_nothing_listens_beyond_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("L2LOOP_WEB_BIND", "L2LOOP_API_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert (Settings().web_bind, Settings().api_host) == ("127.0.0.1", "127.0.0.1")


def test_settings_are_frozen_and_checked() -> None:
    with pytest.raises(ValidationError):
        Settings(topic_prefix="bad prefix")
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.batch_size = 3  # type: ignore[misc]


def test_unset_services_say_so() -> None:
    with pytest.raises(RuntimeError, match="L2LOOP_KAFKA_BROKER"):
        _ = Settings(kafka_broker=None).bootstrap_servers


def test_alert_clearing_levels_must_lie_on_the_safe_side() -> None:
    with pytest.raises(ValidationError, match="alert_recall_clear"):
        Settings(alert_recall=0.9, alert_recall_clear=0.85)
    with pytest.raises(ValidationError, match="alert_fp_rate_clear"):
        Settings(alert_fp_rate=0.02, alert_fp_rate_clear=0.03)


@pytest.mark.parametrize(
    "wrong",
    [
        {"assembly_val_fraction": 0.2},
        {"assembly_train_fraction": 0.7},
        {"assembly_variation_weight_min": 3.0},
    ],
)
def test_assembly_split_shares_and_variation_weights_must_make_sense(
    wrong: dict[str, float],
) -> None:
    with pytest.raises(ValidationError):
        Settings(**wrong)  # type: ignore[arg-type]
    Settings(assembly_train_fraction=0.7, assembly_val_fraction=0.15, assembly_test_fraction=0.15)
