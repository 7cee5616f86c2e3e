"""How a worker starts the children that read tenant content: the training child and inference children.

The one place where a child's argv, environment, folders and limits are decided, so that every child that
loads a tenant's checkpoint, model, yaml or dataset starts the same way: in the sandbox (``sandbox``),
seeing only its job's folder (writable) and its inputs (read-only), in its own session and cgroups.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from yolo_task_manager.settings import Settings
from yolo_task_manager.workers.sandbox import SandboxedProcess, job_policy, spawn

__all__ = ["start_child"]

log = logging.getLogger(__name__)


def start_child(
    argv: Sequence[str],
    *,
    settings: Settings,
    sandboxed: bool,
    job_dir: Path,
    log_path: Path,
    pass_fds: Sequence[int],
    read_only: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    masked: Sequence[Path] = (),
    gpu: bool = False,
) -> SandboxedProcess:
    """Start ``argv`` writing only ``job_dir`` (and ``writable``), reading ``read_only``, logging to ``log_path``.

    Args:
        sandboxed: from ``sandbox.require_sandbox(settings.sandbox)`` at the worker's start.
        pass_fds: the pipes it talks to its parent on.
        masked: folders inside ``read_only`` that it must not see (another run of the same tenant).
    """
    if not sandboxed:
        log.warning(
            "YTM_SANDBOX=off: %s runs unsandboxed, with this worker's privileges; a tenant's checkpoint, yaml or "
            "dataset can reach every other tenant's data", " ".join(argv[1:4])
        )  # fmt: skip
    policy = job_policy(
        job_dir, base_env=os.environ, read_only=read_only, writable=writable, masked=masked,
        hide=(settings.storage_root,), memory_bytes=settings.child_memory,
        max_processes=settings.child_max_processes, gpu=gpu,
    )  # fmt: skip
    with open(log_path, "ab") as out:
        return spawn(argv, policy, sandboxed=sandboxed, pass_fds=pass_fds, stdout=out, stderr=subprocess.STDOUT)
