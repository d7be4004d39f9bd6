"""A worker started wrongly, as a new user would: one line naming the path or address and
the problem, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from l2loop.infra.embedded import free_port
from l2loop.resilience import EXIT_UNAVAILABLE
from l2model.artifacts import default_model_dir

# Starts real worker processes.
pytestmark = pytest.mark.integration


def run_worker(env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("L2LOOP_")}
    return subprocess.run(
        [sys.executable, "-m", "l2loop", "worker"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def the_error_line(done: subprocess.CompletedProcess[str]) -> str:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


def unreachable(tmp_path: Path) -> dict[str, str]:
    """Services nobody listens on, waited for only briefly."""
    return {
        "L2LOOP_KAFKA_BROKER": f"127.0.0.1:{free_port()}",
        "L2LOOP_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "L2LOOP_STARTUP_TIMEOUT_S": "2",
        "L2LOOP_DATA_DIR": str(tmp_path / "var"),
    }


def _model_dir(tmp_path: Path, breakage: str) -> tuple[Path, str]:
    model = tmp_path / "model"
    if breakage == "missing":
        return model, "no such model directory"
    shutil.copytree(default_model_dir(), model)
    if breakage == "no_manifest":
        (model / "manifest.json").unlink()
        return model / "manifest.json", "missing"
    if breakage == "manifest_without_kind":
        (model / "manifest.json").write_text('{"name": "x", "version": "1.0.0", "input": {}}')
        return model / "manifest.json", "kind: Field required"
    (model / "model.onnx").write_bytes(b"not a graph")
    return model / "model.onnx", "not a loadable ONNX graph"


@pytest.mark.parametrize(
    "breakage", ["missing", "no_manifest", "manifest_without_kind", "corrupt_graph"]
)
def test_a_broken_model_directory_is_one_line_naming_the_file(
    tmp_path: Path, breakage: str
) -> None:
    model_dir, problem = _model_dir(tmp_path, breakage)
    env = unreachable(tmp_path) | {"L2LOOP_MODEL_DIR": str(tmp_path / "model")}
    done = run_worker(env)
    assert done.returncode == 1
    line = the_error_line(done)
    assert str(model_dir) in line and problem in line


def test_an_unreachable_broker_is_one_line_naming_its_address(tmp_path: Path) -> None:
    env = unreachable(tmp_path)
    done = run_worker(env)
    assert done.returncode == EXIT_UNAVAILABLE
    line = the_error_line(done)
    assert env["L2LOOP_KAFKA_BROKER"] in line and "did not answer within 2s" in line
    # Waited, one line per attempt, before giving up.
    assert "event=dependency_waiting dependency=kafka" in done.stderr


def test_an_unreachable_redis_is_one_line_naming_its_address(
    tmp_path: Path, service_endpoints: tuple[str, str]
) -> None:
    env = unreachable(tmp_path) | {"L2LOOP_KAFKA_BROKER": service_endpoints[0]}
    done = run_worker(env)
    assert done.returncode == EXIT_UNAVAILABLE
    assert env["L2LOOP_REDIS_URL"] in the_error_line(done)


def test_a_data_directory_that_does_not_exist_is_created(tmp_path: Path) -> None:
    env = unreachable(tmp_path) | {"L2LOOP_DATA_DIR": str(tmp_path / "not" / "yet" / "var")}
    done = run_worker(env)
    # It got as far as waiting for the broker: the directory was no obstacle.
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr[-2000:]
    assert (tmp_path / "not" / "yet" / "var").is_dir()


def test_a_setting_of_the_wrong_type_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    done = run_worker(unreachable(tmp_path) | {"L2LOOP_PARTITIONS": "four"})
    assert done.returncode != 0
    assert "L2LOOP_PARTITIONS" in the_error_line(done)


def test_roles_that_split_the_readers_of_a_topic_are_one_line_saying_what_to_run(
    tmp_path: Path,
) -> None:
    done = run_worker(unreachable(tmp_path) | {"L2LOOP_WORKER_ROLES": "windows,alerts"})
    assert done.returncode == 1
    line = the_error_line(done)
    assert "leave out curated" in line and "run windows,alerts,curated together" in line
