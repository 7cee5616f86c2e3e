"""The embedded default leaves nothing behind: its Redis server and CPU worker end with the producer,
however the producer ends (SIGTERM and SIGKILL run no Python cleanup)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PRODUCER = """
import sys, time
from yolo_task_manager import YoloTaskManager
from yolo_task_manager.storage.local_fs import LocalFileSystemStorage
mgr = YoloTaskManager(LocalFileSystemStorage(sys.argv[1]), default_device="cpu")
print(mgr._redis_server.process.pid, mgr._worker.process.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a parent that will never reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_embedded_redis_and_worker_end_with_their_producer(tmp_path: Path, sig: signal.Signals):
    # Given: a producer on the embedded default, with its Redis server and CPU worker up
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(tmp_path / "root")], stdout=subprocess.PIPE,
                                text=True, cwd=tmp_path)  # fmt: skip
    try:
        assert producer.stdout is not None
        redis_pid, worker_pid = (int(p) for p in producer.stdout.readline().split())
        assert _alive(redis_pid) and _alive(worker_pid)

        # When: the producer is killed
        producer.send_signal(sig)
        producer.wait(30)

        # Then: both follow it out
        deadline = time.monotonic() + 90
        while (_alive(redis_pid) or _alive(worker_pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(redis_pid), "the embedded redis-server outlived its producer"
        assert not _alive(worker_pid), "the local worker outlived its producer"
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
        for pid in (locals().get("redis_pid"), locals().get("worker_pid")):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)  # ours: started by the producer this test started
