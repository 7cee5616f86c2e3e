"""Real parts: a real Redis server, real `ytm worker` processes, real ultralytics trainings."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from yolo_task_manager import Settings, YoloTaskManager
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.datasets.sample import make_sample_dataset
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.workers.offline import offline_env

TINY = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False}
"""Training arguments that keep a test's training to seconds."""


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolov8n checkpoint made here from yolov8n.yaml (official weights cannot be had offline)."""
    scratch = tmp_path_factory.mktemp("base")
    path = scratch / "yolov8n.pt"
    code = f"from ultralytics import YOLO; YOLO('yolov8n.yaml').save({str(path)!r})"
    subprocess.run([sys.executable, "-c", code], env=offline_env(os.environ, scratch), check=True, cwd=scratch,
                   capture_output=True)  # fmt: skip
    return path


@pytest.fixture(scope="session")
def datasets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's shared dataset folder of every test deployment (``shared_data_dirs``)."""
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def coco8(fixtures_dir: Path, datasets_dir: Path) -> Path:
    """A copy of coco8 of this test's own."""
    return Path(shutil.copytree(fixtures_dir / "datasets" / "coco8", datasets_dir / f"coco8-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="session")
def shapes(datasets_dir: Path) -> Path:
    """32 generated training images: epochs long enough to stop or kill a worker in the middle of one."""
    return make_sample_dataset(datasets_dir / "shapes", train=32, val=8, size=64)


class Stack:
    """One isolated deployment on the shared Redis: its own key prefix, node names, root and database."""

    def __init__(self, settings: Settings, base_checkpoint: Path) -> None:
        self.settings = settings
        self.workers: list[subprocess.Popen[bytes]] = []
        self.managers: list[YoloTaskManager] = []
        self.redis = redis.Redis.from_url(settings.redis_url or "")
        settings.pretrained_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base_checkpoint, settings.pretrained_dir / "yolov8n.pt")

    def manager(self, **overrides: object) -> YoloTaskManager:
        settings = self.settings.replace(**overrides)
        mgr = YoloTaskManager(LocalFileSystemStorage(settings.storage_root), default_device="cpu", settings=settings)
        self.managers.append(mgr)
        return mgr

    def start_worker(self, node: str | None = None, **overrides: object) -> subprocess.Popen[bytes]:
        settings = self.settings.replace(node=node or self.settings.node, **overrides)
        log = settings.state_dir / f"worker-{len(self.workers)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "yolo_task_manager.cli", "worker", "--device", "cpu"],
                env={**os.environ, **settings.to_env()}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.workers.append(proc)
        presence, queue = WorkerPresence(self.redis, Keys(settings.key_prefix)), queue_for_device("cpu", settings.node)
        started, deadline = time.time(), time.monotonic() + 60
        while (presence.last_beat(queue) or 0.0) < started:  # a beat of this worker, not of one before it
            assert proc.poll() is None, f"worker exited with {proc.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "worker did not register in 60s"
            time.sleep(0.1)
        return proc

    def close(self) -> None:
        for mgr in self.managers:
            mgr.close()
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.redis.close()


def new_stack(root: Path, redis_server: EmbeddedRedis, base_checkpoint: Path, shared: tuple[Path, ...] = ()) -> Stack:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        storage_root=root,
        redis_url=redis_server.url,
        key_prefix=f"t{tag}",
        node=f"n{tag}",
        lease_ttl=6.0,  # the child quits after 3 s without a keep-alive: room for a loaded machine
        heartbeat_interval=1.0,
        tick_interval=0.5,
        stop_grace=20.0,
        shared_data_dirs=shared,
        # Sandboxed wherever bubblewrap works; CI, which installs it, must not quietly go without.
        sandbox="on" if os.environ.get("CI") else "auto",
    )
    return Stack(settings, base_checkpoint)


@pytest.fixture
def stack(
    redis_server: EmbeddedRedis, base_checkpoint: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
    datasets_dir: Path,
) -> Iterator[Stack]:
    """A deployment whose users may also read the shared datasets and this test's ``tmp_path`` (where tests
    put the files a user supplies); its storage root lies outside both."""
    root = tmp_path_factory.mktemp("root")
    s = new_stack(root, redis_server, base_checkpoint, shared=(datasets_dir, tmp_path))
    yield s
    s.close()


@contextlib.contextmanager
def http_server(cmd: list[str], env: dict[str, str], probe: str, expect: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command until it answers ``probe`` with ``expect``; stop it (by its PID) afterwards."""
    import httpx

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            return httpx.get(probe, timeout=2).status_code == expect
        except httpx.TransportError:
            assert proc.poll() is None, f"{cmd} exited with {proc.returncode}"
            return False

    try:
        wait_for(up, 60, f"{probe} to answer")
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


def is_resumable(last: Path) -> bool:
    """Whether ultralytics can resume from ``last`` (checked in a child: no torch in the test process)."""
    probe = "import sys, pathlib; from yolo_task_manager.workers.train_child import resume_checkpoint; "
    probe += "print(resume_checkpoint(pathlib.Path(sys.argv[1])) is not None)"
    out = subprocess.run([sys.executable, "-c", probe, str(last)], capture_output=True, text=True, check=True)
    # The last line: ultralytics greets its first import on a new machine on stdout.
    return out.stdout.strip().splitlines()[-1:] == ["True"]


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, what: str = "condition", poll: float = 0.1) -> Any:
    """``predicate()``'s first truthy value, polled until ``timeout`` seconds have passed (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


class Followed:
    """A run queued with an ``on_metrics`` callback that records, in order, each epoch the caller was told of."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.epochs: list[int] = []

    def wait_for_epoch(self, epoch: int = 1, timeout: float = 300) -> None:
        wait_for(lambda: len(self.epochs) >= epoch, timeout, f"epoch {epoch}")

    def reported(self, count: int) -> list[int]:
        """The epochs reported once ``count`` of them were (events reach the caller a moment after the registry)."""
        wait_for(lambda: len(self.epochs) >= count, 30, f"{count} epochs")
        return list(self.epochs)


def train_followed(
    mgr: YoloTaskManager, user_id: str, dataset: Path, epochs: int, run_name: str, **kwargs: object
) -> Followed:
    """``mgr.train`` a tiny run from ``yolov8n.pt`` with its epochs recorded as they are reported."""
    followed = Followed("")
    followed.run_id = mgr.train(user_id, "yolov8n.pt", str(dataset), epochs=epochs, run_name=run_name,
                                callbacks={"on_metrics": lambda r, e, m: followed.epochs.append(e)},
                                **{**TINY, **kwargs})  # fmt: skip
    return followed
