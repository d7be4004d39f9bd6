"""`l2loop model promote|list|rollback` against the real broker and Redis."""

from __future__ import annotations

from click.testing import CliRunner

from l2loop.cli import main
from l2loop.settings import Settings


def test_model_promote_list_rollback(topics: Settings, make_model_dir) -> None:
    runner = CliRunner()
    env = topics.to_env()
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
    assert listed[0].startswith("  1.0.0\tl2-fast\tfast")  # the committed default, copied
    assert listed[1].startswith("* 1.0.1") and listed[1].endswith("retrained on Q3 reports")

    back = runner.invoke(main, ["model", "rollback"], env=env)
    assert back.exit_code == 0 and "current model: 1.0.0" in back.stdout
    again = runner.invoke(main, ["model", "rollback"], env=env)
    assert again.exit_code != 0 and "nothing to roll back" in again.output
    unknown = runner.invoke(main, ["model", "promote", "7.7.7"], env=env)
    assert unknown.exit_code != 0 and "not in the registry" in unknown.output
