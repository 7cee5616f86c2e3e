"""`ytm` as an operator uses it: live logs in a terminal, JSON for scripts, documented exit codes."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import TINY, Stack
from yolo_task_manager import RunStatus

pytestmark = pytest.mark.slow


def ytm(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = env if env is not None else {**os.environ, **stack.settings.to_env()}
    return subprocess.run([sys.executable, "-m", "yolo_task_manager.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_logs_follow_shows_epochs_in_a_terminal_while_the_run_trains(stack: Stack, shapes: Path):
    # Given: a 4-epoch training
    stack.start_worker()
    mgr = stack.manager()
    run_id = mgr.train("lea", "yolov8n.pt", str(shapes), epochs=4, run_name="watched", **TINY)

    # When: `ytm logs -f` runs in a pseudo-terminal
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "yolo_task_manager.cli", "logs", "--user", "lea", run_id, "-f"],
                            env={**os.environ, **stack.settings.to_env()}, stdin=follower, stdout=follower,
                            stderr=follower)  # fmt: skip
    os.close(follower)
    screen, status_at_first_epoch = "", None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1)[0]:
            try:
                screen += os.read(leader, 4096).decode(errors="replace")
            except OSError:
                break  # the program exited and closed the terminal
        if status_at_first_epoch is None and "1/4" in screen:
            status_at_first_epoch = mgr.get_run("lea", run_id).status
        if proc.poll() is not None and not select.select([leader], [], [], 0.2)[0]:
            break
    os.close(leader)

    # Then: the first epoch was on screen while the run still trained, with a bar; the command ended with the run
    assert status_at_first_epoch is RunStatus.RUNNING, screen
    lines = [line for line in screen.splitlines() if line.strip()]
    assert [line.split("]")[1].split()[0] for line in lines if line.startswith("[")] == ["1/4", "2/4", "3/4", "4/4"]
    assert "[#####..............." in screen and "mAP50-95" in screen
    first_epoch = dict(mgr.get_metrics("lea", run_id))[1]
    assert f"box_loss {first_epoch['train/box_loss']:.3f}" in lines[[i for i, x in enumerate(lines) if "1/4" in x][0]]
    assert lines[-1].strip() == "completed" and proc.wait(10) == 0


def test_train_follow_json_then_models_list_the_plots(stack: Stack, coco8: Path):
    # Given
    stack.start_worker()
    args = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, "plots": True}.items()]

    # When
    trained = ytm(stack, "train", "--user", "max", "--model", "yolov8n.pt", "--data", str(coco8), "--epochs", "1",
                  "--name", "pics", *args, "--json", "--follow")  # fmt: skip
    listed = ytm(stack, "models", "--user", "max", "--json")
    text = ytm(stack, "models", "--user", "max")

    # Then
    assert trained.returncode == 0, trained.stderr
    lines = [json.loads(line) for line in trained.stdout.splitlines()]
    assert "run_id" in lines[0] and lines[-1]["status"] == "completed"
    assert [line["epoch"] for line in lines if line.get("type") == "metrics"] == [1]
    (model,) = json.loads(listed.stdout)
    plots = {Path(p).name for p in model["plots"]}
    assert {"results.png", "confusion_matrix.png"} <= plots and all(Path(p).is_file() for p in model["plots"])
    assert "results.png" in text.stdout and "pics" in text.stdout


def test_exit_codes_say_what_went_wrong(stack: Stack):
    no_redis = {k: v for k, v in os.environ.items() if not k.startswith("YTM_")}
    assert ytm(stack, "runs").returncode == 2  # usage: --user is required
    assert ytm(stack, "logs", "--user", "a", "x", env=no_redis).returncode == 4  # no Redis configured
    missing = ytm(stack, "stop", "--user", "nobody", "0" * 32)
    assert missing.returncode == 1 and "no run" in missing.stderr
    gpu = ytm(stack, "worker", "--device", "cuda:0")
    assert gpu.returncode == 3 and "cuda:0 is not available" in gpu.stderr
