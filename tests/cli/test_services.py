"""`l2loop canary` against the real broker (`l2loop up` has its own file,
tests/l2loop/test_up.py)."""

from __future__ import annotations

import re

import orjson
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.settings import Settings


def test_canary_sends_labelled_probes(topics: Settings) -> None:
    runner = CliRunner()
    sent = runner.invoke(
        main, ["canary", "--per-min", "600", "--duration", "2"], env=topics.to_env()
    )
    assert sent.exit_code == 0, sent.output
    found = re.search(r"sent (\d+) canary probes", sent.output)
    assert found is not None, sent.output
    count = int(found.group(1))
    assert count >= 1
    tailed = runner.invoke(
        main, ["tail", "scan-events", "--from-beginning", "--idle-exit", "2"], env=topics.to_env()
    )
    events = [orjson.loads(line)["value"] for line in tailed.stdout.strip().splitlines()]
    assert len(events) == count
    assert all(e["tenant_id"] == topics.canary_tenant_id for e in events)
    assert all(e["ground_truth"]["source"] == "canary" for e in events)
