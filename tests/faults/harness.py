"""The fault suite's harness: a Redis server of the test's own, workers ended by PID, a process-table sampler,
and the three checks every fault test ends with.

Every fault test proves the same three things about one run:
- each epoch 1..N was reported exactly once, in order, to the caller's callbacks, in the run's stream (with
  contiguous seqs) and in the registry (``check_exactly_once``);
- at no sampled instant did two training children of the run exist (``ProcessSampler``);
- the published model loads and predicts on a real image (``check_model_predicts``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.faults import sim_trainer
from tests.integration.conftest import wait_for
from yolo_task_manager import RunStatus, Settings, YoloTaskManager
from yolo_task_manager.broker.embedded import find_redis_server, free_port
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.values import Event, EventType

REPO = Path(__file__).resolve().parents[2]
TRAIN_CHILD = "yolo_task_manager.workers.train_child"
LAUNCHER = "tests.faults.launcher"


# ---------------------------------------------------------------------------- Redis


class RedisServer:
    """A ``redis-server`` of one test's own, with a password and an append-only file in ``data_dir``.

    Unlike ``EmbeddedRedis`` it may listen on more addresses than loopback (the simulated hosts' side of
    their veth pairs), and it can be killed (no final write) and restarted with its data or without it.
    """

    def __init__(self, data_dir: Path, bind: Sequence[str] = ("127.0.0.1",)) -> None:
        self.data_dir, self.bind = data_dir, tuple(bind)
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://:{self.password}@{host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "redis.conf"
        config.write_text(f"bind {' '.join(self.bind)}\nport {self.port}\ndir {self.data_dir}\nappendonly yes\n"
                          f"save \"\"\nrequirepass {self.password}\n")  # fmt: skip
        config.chmod(0o600)
        with open(self.data_dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen([find_redis_server(), str(config)], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url())
        try:
            wait_for(lambda: self._pings(client), 20, "redis-server to answer")
        finally:
            client.close()
        return self

    def _pings(self, client: redis.Redis) -> bool:
        assert self.process is not None and self.process.poll() is None, (self.data_dir / "redis.log").read_text()
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (Redis flushes its append-only file), or SIGKILL (as a crash or a power cut)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.process.wait(30)

    def restart(self, *, keep_data: bool = True, down_for: float = 0.0) -> None:
        """Stop the server, stay down ``down_for`` seconds, and start it on the same port: with its
        append-only file, or empty (a new machine, a lost volume)."""
        self.stop(kill=not keep_data)
        if not keep_data:
            for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
                shutil.rmtree(self.data_dir / name, ignore_errors=True)
                (self.data_dir / name).unlink(missing_ok=True)
        time.sleep(down_for)
        self.start()


# ---------------------------------------------------------------------------- workers


@dataclass
class Worker:
    """One worker process, started in a session of its own: ``pid`` is also its process group."""

    process: subprocess.Popen[bytes]
    node: str
    log: Path
    started_at: float
    """Unix time just before it was started."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def queue(self) -> str:
        return queue_for_device("cpu", self.node)

    def kill(self) -> None:
        """kill -9 of the worker's whole process group (its training child lives in a session of its own)."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> None:
        """SIGTERM: Celery's warm shutdown (the running training is asked to stop and requeued)."""
        self.process.send_signal(signal.SIGTERM)

    def freeze(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


class Deployment:
    """One deployment on the test's Redis: its own key prefix, root and registry; workers by PID.

    Settings are the defaults except where speed needs them short (``lease_ttl``, heartbeat, ticks); the
    retry limits (``max_attempts`` and, once merged, ``max_worker_losses``) stay at their defaults.
    """

    def __init__(self, root: Path, redis_url: str, base_checkpoint: Path, shared: tuple[Path, ...] = (),
                 **overrides: Any) -> None:  # fmt: skip
        tag = uuid.uuid4().hex[:8]
        fast: dict[str, Any] = dict(lease_ttl=2.0, heartbeat_interval=0.5, tick_interval=0.5, stop_grace=20.0)
        self.settings = Settings(
            storage_root=root, redis_url=redis_url, key_prefix=f"f{tag}", node=f"n{tag}", shared_data_dirs=shared,
            # Sandboxed wherever bubblewrap works; CI, which installs it, must not quietly go without.
            sandbox="on" if os.environ.get("CI") else "auto", **{**fast, **overrides},
        )  # fmt: skip
        self.workers: list[Worker] = []
        self.managers: list[YoloTaskManager] = []
        self.settings.pretrained_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base_checkpoint, self.settings.pretrained_dir / "yolov8n.pt")

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    def manager(self, **overrides: Any) -> YoloTaskManager:
        settings = self.settings.replace(**overrides)
        mgr = YoloTaskManager(LocalFileSystemStorage(settings.storage_root), default_device="cpu", settings=settings)
        self.managers.append(mgr)
        return mgr

    def start_worker(self, node: str | None = None, *, simulated: bool = True, netns: str | None = None,
                     wait: bool = True, **overrides: Any) -> Worker:  # fmt: skip
        """A worker for ``cpu`` on ``node`` (a new name by default), training with the simulated trainer or
        the real child, in network namespace ``netns`` if given; registered in Redis before this returns."""
        node = node or f"{self.settings.node}w{len(self.workers)}"
        settings = self.settings.replace(node=node, **overrides)
        log = settings.state_dir / f"worker-{node}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        module = LAUNCHER if simulated else "yolo_task_manager.cli"
        argv = [sys.executable, "-m", module, "worker", "--device", "cpu"]
        if netns:
            # Only the network namespace (ip netns exec would also mount a /sys without cgroups); nsenter
            # execs the command, so the pid is still the worker's.
            argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
            "PYTHONPATH", "")]).rstrip(os.pathsep)}  # fmt: skip
        started_at = time.time()
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd=REPO)  # fmt: skip
        worker = Worker(process, node, log, started_at)
        self.workers.append(worker)
        if wait:
            self.wait_registered(worker)
        return worker

    def wait_registered(self, worker: Worker, timeout: float = 90) -> None:
        """Until the worker says it is present: the last-seen hash, which every version of worker presence writes,
        names its queue with a time after its start."""
        client = redis.Redis.from_url(self.settings.redis_url or "")

        def registered() -> bool:
            assert worker.process.poll() is None, f"worker exited with {worker.process.returncode}: {worker.tail()}"
            seen = client.hget(self.keys.worker_seen, worker.queue)
            return seen is not None and float(seen) >= worker.started_at

        try:
            wait_for(registered, timeout, f"worker {worker.node} to register", poll=0.1)
        finally:
            client.close()

    def worker_on(self, queue: str | None) -> Worker:
        """The live worker that serves ``queue`` (a run's ``queue``)."""
        (worker,) = [w for w in self.workers if w.queue == queue and w.process.poll() is None]
        return worker

    def close(self) -> None:
        for mgr in self.managers:
            mgr.close()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.thaw()
                worker.terminate()
        for worker in self.workers:
            try:
                worker.process.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


# ---------------------------------------------------------------------------- the process-table sampler


def _process(pid: str) -> tuple[int, list[str]] | None:
    """A live process's parent PID and argv; None for a zombie or one that is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        if fields[0] == b"Z":
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return int(fields[1]), [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except (OSError, IndexError, ValueError):
        return None


def training_children(run_ids: Sequence[str]) -> dict[str, list[int]]:
    """For each run, the PIDs of its live training children: Python processes running the real child's
    module or the simulated trainer, with the run's job file (in the run's folder) on their command line.

    Only the interpreter counts, not bubblewrap or the gate shell around it, whose argv repeats the child's;
    nor a process that the training forked (a subprocess before its exec shows its parent's argv).
    """
    matched: dict[int, tuple[int, str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (process := _process(pid)) is None:
            continue
        ppid, argv = process
        if not argv or argv[0] != sys.executable or not (TRAIN_CHILD in argv or sim_trainer.MODULE in argv):
            continue
        for run_id in run_ids:
            if any(run_id in part for part in argv[1:] if part.endswith("spec.json")):
                matched[int(pid)] = (ppid, run_id)
    found: dict[str, list[int]] = {run_id: [] for run_id in run_ids}
    for pid, (ppid, run_id) in matched.items():
        if ppid not in matched:
            found[run_id].append(pid)
    return found


@dataclass
class ProcessSampler:
    """A thread that reads /proc every ``interval`` seconds and records, for each run, how many training
    children were alive at each sample. ``most(run_id)`` is the largest count seen."""

    interval: float = 0.05
    run_ids: list[str] = field(default_factory=list)
    samples: int = 0
    counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    crowded: dict[str, dict[int, Any]] = field(default_factory=dict)
    """For each run seen with two trainings at once, those processes: (parent PID, argv) each."""
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, run_id: str) -> None:
        self.run_ids = [*self.run_ids, run_id]

    def start(self) -> ProcessSampler:
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            for run_id, pids in training_children(self.run_ids).items():
                self.counts[run_id].append(len(pids))
                self.pids[run_id].update(pids)
                if len(pids) > 1 and run_id not in self.crowded:  # what the failure message shows
                    self.crowded[run_id] = {pid: _process(str(pid)) for pid in pids}
            self.samples += 1

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(10)

    def most(self, run_id: str) -> int:
        return max(self.counts.get(run_id) or [0])

    def check_at_most_one(self, run_id: str, trainings: int = 1) -> None:
        """Never two children of ``run_id`` at once, and the sampler did see ``trainings`` of them at least
        (a sampler that saw nothing proves nothing)."""
        counts = self.counts.get(run_id) or []
        assert self.samples > 0 and counts, "the sampler took no sample"
        seen = {
            pid: (p[0], [a[:80] for a in p[1][:6]]) if p else None for pid, p in self.crowded.get(run_id, {}).items()
        }
        assert self.most(run_id) == 1, f"{self.most(run_id)} training children of run {run_id} at one instant: {seen}"
        assert len(self.pids[run_id]) >= trainings, f"the sampler saw {len(self.pids[run_id])} training children"


# ---------------------------------------------------------------------------- the checks


class Followed:
    """A run queued with callbacks that record, in order, each epoch and status the caller was told of."""

    def __init__(self) -> None:
        self.run_id = ""
        self.epochs: list[int] = []
        self.statuses: list[str] = []
        self.logs: list[str] = []
        """What the training children said (``LogLine``): one "starting"/"resuming" line per child."""

    def on_metrics(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(epoch)

    def on_status(self, run_id: str, status: RunStatus, reason: str | None) -> None:
        self.statuses.append(RunStatus(status).value)

    def on_event(self, event: Event) -> None:
        if event.type is EventType.LOG and event.reason:
            self.logs.append(event.reason)

    def wait_for_epoch(self, epoch: int, timeout: float = 120) -> None:
        wait_for(lambda: len(self.epochs) >= epoch, timeout, f"epoch {epoch} to be reported")


def train_followed(mgr: YoloTaskManager, user_id: str, dataset: Path, epochs: int, run_name: str,
                   **kwargs: Any) -> Followed:  # fmt: skip
    """``mgr.train`` from the pretrained ``yolov8n.pt`` with its callbacks recorded."""
    followed = Followed()
    callbacks = {"on_metrics": followed.on_metrics, "on_status": followed.on_status, "on_event": followed.on_event}
    followed.run_id = mgr.train(user_id, "yolov8n.pt", str(dataset), epochs=epochs, run_name=run_name,
                                callbacks=callbacks, imgsz=64, batch=4, workers=0, plots=False, **kwargs)  # fmt: skip
    return followed


def check_exactly_once(mgr: YoloTaskManager, user_id: str, followed: Followed, epochs: int) -> None:
    """Every epoch 1..``epochs`` exactly once and in order: in the callbacks, in the run's stream (read
    through ``subscribe``, its seqs contiguous from 1) and in the registry."""
    expected = list(range(1, epochs + 1))
    feed = [event for _, event in mgr.subscribe(user_id, followed.run_id, until_done=True, timeout=30)]
    assert [e.seq for e in feed] == list(range(1, len(feed) + 1)), [e.seq for e in feed]
    assert [e.epoch for e in feed if e.type is EventType.METRICS] == expected
    assert [epoch for epoch, _ in mgr.get_metrics(user_id, followed.run_id)] == expected
    # The callbacks run a moment after the stream is written.
    wait_for(lambda: len(followed.epochs) >= epochs and followed.statuses[-1:] == ["completed"], 30,
             "the callbacks to hear of every epoch and the end")  # fmt: skip
    assert followed.epochs == expected


def check_model_predicts(mgr: YoloTaskManager, user_id: str, model_name: str, image: Path) -> None:
    """The published model loads and predicts, on a worker, through the public API."""
    from PIL import Image

    with Image.open(image) as img:
        size = img.size
    (prediction,) = mgr.infer(user_id, model_name, str(image), conf=0.01, timeout=300)
    assert prediction.error is None, prediction.error
    assert (prediction.task, prediction.width, prediction.height) == ("detect", *size), prediction


def make_template_checkpoint(dest: Path, dataset: Path, scratch: Path) -> Path:
    """A tiny real checkpoint that resumes: one real ultralytics epoch from yolov8n.yaml at imgsz 64, its
    ``last.pt`` copied at the moment it is saved, before the end of training strips its optimizer."""
    from yolo_task_manager.workers.offline import offline_env

    code = f"""
import shutil
from ultralytics import YOLO
model = YOLO("yolov8n.yaml")
model.add_callback("on_model_save", lambda t: shutil.copyfile(t.last, {str(dest)!r}))
model.train(data={str(dataset / "data.yaml")!r}, epochs=1, imgsz=64, batch=4, workers=0, plots=False,
            device="cpu", project={str(scratch)!r}, name="template", exist_ok=True, val=False, amp=False)
"""
    out = subprocess.run([sys.executable, "-c", code], env=offline_env(os.environ, scratch), cwd=scratch,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0 and dest.is_file(), out.stdout[-2000:] + out.stderr[-3000:]
    return dest
