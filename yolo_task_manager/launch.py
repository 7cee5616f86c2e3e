"""The worker's composition root: one Celery worker for one device, pinned, one training at a time,
present in Redis while alive. It builds the ``WorkerContext`` and registers the tasks on it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from celery import signals
from kombu.transport import redis as kombu_redis

from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.devices import infer_queue, queue_for_device, worker_device
from yolo_task_manager.errors import DeviceUnavailable
from yolo_task_manager.settings import Settings
from yolo_task_manager.tasks import register_tasks
from yolo_task_manager.workers.context import WorkerContext
from yolo_task_manager.workers.limits import remove_stale_cgroups
from yolo_task_manager.workers.offline import offline_env
from yolo_task_manager.workers.protocol import ChildCommand, training_child

__all__ = ["pin_device", "run_worker"]

log = logging.getLogger(__name__)


def pin_device(device: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Make ``cuda:N`` the only GPU this process and its children see; raise if it is not there."""
    index = device.split(":")[1]
    environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the numbering nvidia-smi and Docker's device_ids use
    visible = environ.get("NVIDIA_VISIBLE_DEVICES", "")
    ids = visible.split(",") if visible else []
    # In a container given GPU N alone, CUDA calls it 0: pin by its position in the list.
    environ["CUDA_VISIBLE_DEVICES"] = (
        str(ids.index(index)) if ids and all(i.isdigit() for i in ids) and index in ids else index
    )
    probe = "import torch; print(torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", probe], env=dict(environ), capture_output=True, text=True)
    if out.returncode != 0 or out.stdout.strip() in ("", "0"):
        raise DeviceUnavailable(
            f"device {device} is not available on this machine (torch sees no GPU with "
            f"CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']}): check `nvidia-smi -L`, or use 'cpu'"
        )


class _Presence(threading.Thread):
    """Keeps the worker's queue registered in Redis and runs dispatch ticks."""

    def __init__(self, ctx: WorkerContext, parent_pid: int | None) -> None:
        super().__init__(name="ytm-presence", daemon=True)
        self.ctx, self.queue, self.parent_pid = ctx, ctx.queue, parent_pid
        self.stopped = threading.Event()

    def run(self) -> None:
        settings = self.ctx.settings
        presence = WorkerPresence(self.ctx.redis, self.ctx.keys)
        while not self.stopped.is_set():
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("the process that started this worker is gone: shutting down")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                presence.beat(self.queue)
                self.ctx.dispatcher.tick()
            except Exception:  # noqa: BLE001 - Redis or the database restarting must not kill presence
                log.exception("presence tick failed; retrying")
            self.stopped.wait(settings.tick_interval)

    def leave(self) -> None:
        self.stopped.set()
        try:
            WorkerPresence(self.ctx.redis, self.ctx.keys).leave(self.queue)
        except Exception:  # noqa: BLE001
            log.warning("could not unregister queue %s", self.queue)


def run_worker(
    settings: Settings,
    device: str,
    *,
    loglevel: str = "INFO",
    parent_pid: int | None = None,
    training_command: ChildCommand = training_child,
) -> None:
    """Consume ``device``'s queue until SIGTERM (warm: the running training is requeued, then we exit).

    ``training_command`` is the training child's argv: the fault tests give a simulated trainer that speaks
    the same protocol (``tests/faults/sim_trainer.py``)."""
    device = worker_device(device)
    queue = queue_for_device(device, settings.node)
    if device.startswith("cuda:"):
        pin_device(device)
    # This process imports ultralytics for inference and export: offline, like the training children.
    scratch = settings.state_dir / "workers" / queue
    os.environ.update(offline_env(os.environ, scratch))
    # kombu's Redis channel tries to requeue unacknowledged (prefetched) messages when it closes; on a
    # lost connection that raises an AttributeError that kills the worker (kombu issues 582 and 970).
    # An unrestored message comes back after the visibility timeout instead.
    kombu_redis.QoS.restore_at_shutdown = False
    # Raises SandboxUnavailable where "on" cannot be honoured.
    ctx = WorkerContext(settings, device, training_command=training_command)
    if not ctx.sandboxed:
        log.warning("YTM_SANDBOX=%s: tenant content runs unsandboxed on this worker", settings.sandbox or "on")
    remove_stale_cgroups()
    register_tasks(ctx.app, ctx)
    presence = _Presence(ctx, parent_pid)

    def on_ready(**_: Any) -> None:
        presence.start()

    def on_shutdown(**_: Any) -> None:
        ctx.shutting_down.set()
        presence.leave()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    ctx.app.worker_main(
        argv=[
            # Two threads: the device's one training (the dispatcher never sends a second) and its
            # inference and export requests, which must not wait hours behind a training.
            "worker", "-Q", f"{queue},{infer_queue(queue)}", "-P", "threads", "-c", "2",
            "-n", f"{queue}@{settings.node}",
            "--without-mingle", "--without-gossip", "-E", f"--loglevel={loglevel}",
        ]
    )  # fmt: skip
