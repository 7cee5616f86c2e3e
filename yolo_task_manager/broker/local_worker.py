"""A worker subprocess for the single-machine default, started and stopped by the manager."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import redis

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.constants import EXIT_DEVICE
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.errors import BrokerUnavailable, DeviceUnavailable, YoloTaskManagerError
from yolo_task_manager.settings import Settings

__all__ = ["LocalWorker"]

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
"""Restarts within ``RESTART_WINDOW`` seconds after which a crashing worker is left down."""
RESTART_WINDOW = 300.0


class LocalWorker:
    """``ytm worker --device DEVICE`` as a child of this process, which it follows out when we die.

    A worker that dies (killed, out of memory) is started again, as compose's ``restart:`` would: its
    run is requeued by its lease and resumes from last.pt on the new one.
    """

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.queue = queue_for_device(device, settings.node)
        self.log_path = settings.state_dir / "workers" / f"{self.queue}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self, timeout: float = 180.0) -> LocalWorker:
        self._spawn(timeout)
        threading.Thread(target=self._restart_when_dead, name="ytm-local-worker", daemon=True).start()
        return self

    def _spawn(self, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.to_env()}
        cmd = [sys.executable, "-m", "yolo_task_manager.cli", "worker", "--device", self.device,
               "--exit-with-parent", str(os.getpid())]  # fmt: skip
        with self._lock, open(self.log_path, "ab") as out:
            if self._stopping.is_set():
                return
            self.process = process = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        client = redis.Redis.from_url(self.settings.redis_url or "")
        presence = WorkerPresence(client, Keys(self.settings.key_prefix))
        started, deadline = time.time(), time.monotonic() + timeout
        try:
            while (presence.last_beat(self.queue) or 0.0) < started:  # a beat of this worker, not a dead one
                code = process.poll()
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

    def _restart_when_dead(self) -> None:
        while self.process is not None:
            code = self.process.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error("the local worker keeps dying (last exit code %s): left down; see %s", code, self.log_path)
                return
            log.warning("the local worker exited with code %s: starting another; see %s", code, self.log_path)
            try:
                self._spawn(180.0)
            except YoloTaskManagerError as exc:
                log.error("the local worker could not be started again: %s", exc)
                return

    def stop(self) -> None:
        """Warm shutdown: the running training is interrupted and requeued; then the group is killed."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.settings.stop_grace + 15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
