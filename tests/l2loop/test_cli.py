"""The command line against the real broker: produce, tail, schemas, topics, model, canary
(`l2loop up` has its own file, test_up.py)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.infra.topics import TOPICS
from l2loop.settings import Settings


def env_of(settings: Settings) -> dict[str, str]:
    return settings.to_env()


def test_schemas_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ScanEvent.schema.json").exists()


def test_topics_creates_every_topic(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["topics"], env=env_of(settings))
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
    produced = runner.invoke(main, ["produce", str(events)], env=env_of(topics))
    assert produced.exit_code == 0, produced.output
    assert "sent 2 records" in produced.output

    tailed = runner.invoke(
        main, ["tail", "scan-events", "--from-beginning", "--idle-exit", "2"], env=env_of(topics)
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


def test_model_promote_list_rollback(topics: Settings, make_model_dir) -> None:
    runner = CliRunner()
    env = env_of(topics)
    first = runner.invoke(main, ["model", "promote", str(make_model_dir("1.0.0"))], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        main,
        [
            "model",
            "promote",
            str(make_model_dir("1.0.0")),
            "--as-version",
            "1.0.1",
            "--change",
            "retrained on Q3 reports",
        ],
        env=env,
    )
    assert second.exit_code == 0, second.output
    assert "current model: 1.0.1" in second.stdout

    listed = runner.invoke(main, ["model", "list"], env=env).stdout.splitlines()
    assert listed[0].startswith("  1.0.0\tl2-lite\tlite")
    assert listed[1].startswith("* 1.0.1") and listed[1].endswith("retrained on Q3 reports")

    back = runner.invoke(main, ["model", "rollback"], env=env)
    assert back.exit_code == 0 and "current model: 1.0.0" in back.stdout
    again = runner.invoke(main, ["model", "rollback"], env=env)
    assert again.exit_code != 0 and "nothing to roll back" in again.output
    unknown = runner.invoke(main, ["model", "promote", "7.7.7"], env=env)
    assert unknown.exit_code != 0 and "not in the registry" in unknown.output


def test_canary_sends_labelled_probes(topics: Settings) -> None:
    runner = CliRunner()
    sent = runner.invoke(
        main, ["canary", "--per-min", "600", "--duration", "2"], env=env_of(topics)
    )
    assert sent.exit_code == 0, sent.output
    found = re.search(r"sent (\d+) canary probes", sent.output)
    assert found is not None, sent.output
    count = int(found.group(1))
    assert count >= 1
    tailed = runner.invoke(
        main, ["tail", "scan-events", "--from-beginning", "--idle-exit", "2"], env=env_of(topics)
    )
    events = [orjson.loads(line)["value"] for line in tailed.stdout.strip().splitlines()]
    assert len(events) == count
    assert all(e["tenant_id"] == topics.canary_tenant_id for e in events)
    assert all(e["ground_truth"]["source"] == "canary" for e in events)
