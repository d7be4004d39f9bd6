"""Topic configs: a text TTL bounds how long every topic that carries texts keeps them."""

from __future__ import annotations

from l2loop.infra.topics import CURATED_EXAMPLES, SCAN_EVENTS, SCAN_VERDICTS, TOPICS, topic_config
from l2loop.settings import Settings

DAY_S = 24 * 3600


def config_of(name: str, settings: Settings) -> dict[str, str]:
    (spec,) = [spec for spec in TOPICS if spec.name == name]
    return topic_config(spec, settings)


def test_without_a_text_ttl_the_retentions_stand() -> None:
    settings = Settings()
    assert config_of(CURATED_EXAMPLES, settings)["retention.ms"] == "-1"
    assert config_of(SCAN_EVENTS, settings)["retention.ms"] == str(7 * DAY_S * 1000)


def test_a_text_ttl_caps_the_topics_that_carry_texts_only() -> None:
    settings = Settings(text_ttl_s=2 * DAY_S)
    assert config_of(CURATED_EXAMPLES, settings)["retention.ms"] == str(2 * DAY_S * 1000)
    assert config_of(SCAN_EVENTS, settings)["retention.ms"] == str(2 * DAY_S * 1000)
    # verdicts carry no text: their retention is not the privacy setting's business
    assert config_of(SCAN_VERDICTS, settings)["retention.ms"] == str(14 * DAY_S * 1000)
    # a longer TTL never lengthens a retention
    long = Settings(text_ttl_s=365 * DAY_S)
    assert config_of(SCAN_EVENTS, long)["retention.ms"] == str(7 * DAY_S * 1000)


def test_the_verdict_store_keeps_texts_no_longer_than_the_text_ttl() -> None:
    assert Settings(verdict_ttl_s=8 * DAY_S).stored_verdict_ttl_s == 8 * DAY_S
    assert Settings(verdict_ttl_s=8 * DAY_S, text_ttl_s=DAY_S).stored_verdict_ttl_s == DAY_S
