"""``up.json``: what other terminals attach with, and never a password."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from pydantic import SecretStr

from l2loop.infra.services import RUNTIME_FILE, RunningUp, announce_up, attached_settings
from l2loop.settings import Settings
from tests.fixtures.exposure import not_private

BROKER = "127.0.0.1:19092"


def _unconfigured(data_dir: Path) -> Settings:
    # Explicit Nones: the test's own environment may name services.
    return Settings(data_dir=data_dir, kafka_broker=None, redis_url=None)


@pytest.mark.usefixtures("loose_umask")
@pytest.mark.parametrize(
    "redis_url",
    [
        "redis://:s3cret-pw@127.0.0.1:16379/2",
        "redis://l2loop:s3cret-pw@127.0.0.1:16379/2",
        "redis://127.0.0.1:16379/2?password=s3cret-pw",
    ],
)
def test_up_json_holds_no_password_and_attaching_takes_it_from_the_environment(
    tmp_path: Path, redis_url: str
) -> None:
    data_dir = tmp_path / "var"
    up = Settings(data_dir=data_dir, kafka_broker=BROKER, redis_url=redis_url)
    with announce_up(up, api_url="http://127.0.0.1:18080") as publish:
        publish({"worker": 4242})
        raw = (data_dir / RUNTIME_FILE).read_bytes()
        assert b"s3cret-pw" not in raw
        running = RunningUp.model_validate_json(raw)
        assert running.redis_url == "redis://127.0.0.1:16379/2"
        assert running.redis_url_withheld
        assert not_private(data_dir) == []
        with pytest.raises(click.ClickException, match="set L2LOOP_REDIS_URL"):
            attached_settings(_unconfigured(data_dir))
        with_password = _unconfigured(data_dir).model_copy(
            update={"redis_url": SecretStr(redis_url)}
        )
        attached = attached_settings(with_password)
        assert (attached.kafka_broker, attached.redis_dsn) == (BROKER, redis_url)
    assert not (data_dir / RUNTIME_FILE).exists()


@pytest.mark.integration
def test_a_redis_without_credentials_is_attached_to_from_up_json(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    address = "redis://127.0.0.1:16379/0"
    up = Settings(data_dir=data_dir, kafka_broker=BROKER, redis_url=address)
    with announce_up(up):
        attached = attached_settings(_unconfigured(data_dir))
        assert (attached.kafka_broker, attached.redis_dsn) == (BROKER, address)


def test_commands_attached_to_up_use_its_embedded_s3_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    up = Settings(
        data_dir=data_dir,
        kafka_broker=BROKER,
        redis_url="redis://127.0.0.1:16379/0",
        store_url="s3://l2loop",
        s3_endpoint="http://127.0.0.1:18333",
        s3_unsigned=True,
    )
    with announce_up(up):
        attached = attached_settings(_unconfigured(data_dir))
    assert (attached.store_url, attached.s3_endpoint, attached.s3_unsigned) == (
        "s3://l2loop",
        "http://127.0.0.1:18333",
        True,
    )
