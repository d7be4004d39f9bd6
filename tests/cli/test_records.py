"""`l2loop topics`, `produce`, `tail` and `schemas export` against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.infra.topics import TOPICS
from l2loop.settings import Settings


def test_schemas_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ScanEvent.schema.json").exists()


def test_topics_creates_every_topic(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["topics"], env=settings.to_env())
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(TOPICS)
    assert all(line.endswith("\tcreated") for line in lines)


def test_produce_then_tail_round_trip(topics: Settings, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b'{"event_id":"a","ts":1,"tenant_id":"t","text":"hello"}\nnot json at all\n\n'
    )
    runner = CliRunner()
    produced = runner.invoke(main, ["produce", str(events)], env=topics.to_env())
    assert produced.exit_code == 0, produced.output
    assert "sent 2 records" in produced.output

    tailed = runner.invoke(
        main, ["tail", "scan-events", "--from-beginning", "--idle-exit", "2"], env=topics.to_env()
    )
    assert tailed.exit_code == 0, tailed.output
    lines = [orjson.loads(line) for line in tailed.stdout.strip().splitlines()]
    values = sorted(str(line["value"]) for line in lines)
    assert values == sorted(
        ["not json at all", str(orjson.loads(events.read_bytes().split(b"\n")[0]))]
    )
    assert [line["key"] for line in lines if isinstance(line["value"], dict)] == ["a"]


def test_client_commands_explain_a_missing_broker(tmp_path: Path) -> None:
    env = {"L2LOOP_KAFKA_BROKER": "", "L2LOOP_REDIS_URL": "", "L2LOOP_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["tail", "scan-verdicts"], env=env)
    assert result.exit_code != 0
    assert "start `l2loop up` first" in result.output
