"""A worker subprocess for the single-machine default, started and stopped by the manager."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import redis

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.routing import queue_for_device
from yolo_task_manager.cli import EXIT_DEVICE
from yolo_task_manager.errors import BrokerUnavailable, DeviceUnavailable
from yolo_task_manager.settings import Settings

__all__ = ["LocalWorker"]


class LocalWorker:
    """``ytm worker --device DEVICE`` as a child of this process, which it follows out when we die."""

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.queue = queue_for_device(device, settings.node)
        self.log_path = settings.state_dir / "workers" / f"{self.queue}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> LocalWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.to_env()}
        cmd = [sys.executable, "-m", "yolo_task_manager.cli", "worker", "--device", self.device,
               "--exit-with-parent", str(os.getpid())]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        client = redis.Redis.from_url(self.settings.redis_url or "")
        key = Keys(self.settings.key_prefix).worker(self.queue)
        deadline = time.monotonic() + timeout
        try:
            while not client.exists(key):
                code = self.process.poll()
                if code is not None:
                    tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                    error = DeviceUnavailable if code == EXIT_DEVICE else BrokerUnavailable
                    raise error(f"the local worker for {self.device} exited with code {code}: {tail[0]}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerUnavailable(f"the local worker did not start in {timeout:g}s: see {self.log_path}")
                time.sleep(0.1)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        """Warm shutdown: the running training is interrupted and requeued; then the group is killed."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.settings.stop_grace + 15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
