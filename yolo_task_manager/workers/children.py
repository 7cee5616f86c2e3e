"""How a worker starts the children that read tenant content: the training child and inference children.

The one place where a child's argv, environment, folders and process group are decided, so that every
child that loads a tenant's checkpoint, model or dataset starts the same way.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from yolo_task_manager.settings import Settings
from yolo_task_manager.workers.offline import offline_env

__all__ = ["start_child"]


def start_child(
    argv: Sequence[str],
    *,
    settings: Settings,
    scratch: Path,
    log_path: Path,
    pass_fd: int,
    cwd: Path,
    stdin_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so its whole group can be killed), offline, logging to ``log_path``.

    Args:
        scratch: the child's own caches and ultralytics config.
        pass_fd: the write end of the pipe it reports on.
        stdin_pipe: give it a pipe for requests instead of /dev/null.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in offline_env(os.environ, scratch).items() if not k.startswith("YTM_")}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            pass_fds=[pass_fd],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            start_new_session=True,
        )
