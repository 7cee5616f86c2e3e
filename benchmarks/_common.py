"""Shared helpers for the benchmarks: a scratch folder, a real Redis, real ``ytm worker`` processes,
offline subprocesses, percentiles and tables.

Everything here starts is stopped by PID in ``Bench.close()``; the scratch folder is removed unless
``YTM_BENCH_KEEP=1``. Nothing reaches the network: every process that may import ultralytics gets
``offline_env``. No timings are asserted anywhere: the scripts report, they do not judge.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from yolo_task_manager import Settings, YoloTaskManager
from yolo_task_manager.broker.embedded import EmbeddedRedis, find_redis_server
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.datasets import inspect_dataset, write_training_data
from yolo_task_manager.datasets.sample import make_sample_dataset
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.workers.offline import ULTRALYTICS_SETTINGS, offline_env

__all__ = [
    "BASE_MODEL",
    "DATASET_SIZE",
    "PY",
    "TINY",
    "USER",
    "Bench",
    "fmt_table",
    "machine_info",
    "median",
    "percentile",
    "plain_train_code",
    "print_header",
    "proc_stats",
    "run_python",
    "run_python_logged",
]

PY = sys.executable
USER = "bench"
BASE_MODEL = "yolov8n.yaml"  # from scratch: no weights needed
TINY: dict[str, Any] = {"imgsz": 64, "batch": 8, "workers": 0, "plots": False}
"""The tiny training arguments every benchmark uses (with a per-script epoch count)."""
DATASET_SIZE = {"train": 16, "val": 8, "size": 64}


# -- statistics and printing ----------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def fmt_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (readable as plain text too)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on, read without importing torch or ultralytics."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or "?",
        )
        if Path("/proc/cpuinfo").is_file()
        else platform.processor()
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    redis_version = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout
    gpu = "none (CPU only)"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpu = out.stdout.strip() or "nvidia-smi present, no GPU listed"
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "nproc": nproc,
        "gpu": gpu,
        "load average (1/5/15 min) at start": load,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "ultralytics": _version("ultralytics"),
        "celery": _version("celery"),
        "redis-py": _version("redis"),
        "redis-server": (redis_version.split("v=")[1].split()[0] if "v=" in redis_version else redis_version.strip()),
        "yolo-task-manager": _version("yolo-task-manager"),
    }


def print_header(title: str, params: Mapping[str, Any]) -> None:
    print(f"# {title}\n")
    for key, value in {**machine_info(), **params}.items():
        print(f"- {key}: {value}")
    print(flush=True)


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def proc_stats(pid: int, *, tree: bool = False) -> dict[str, float]:
    """A live process's memory and CPU time from ``/proc``: ``rss_mib`` (VmRSS), ``hwm_mib`` (VmHWM, its
    peak RSS) and ``cpu_s`` (user + system seconds, all its threads). With ``tree``, summed over it and its
    live descendants (a worker and its inference children)."""
    if tree:
        parts = [proc_stats(p) for p in [pid, *_descendants(pid)] if Path(f"/proc/{p}/status").exists()]
        return {key: sum(part[key] for part in parts) for key in ("rss_mib", "hwm_mib", "cpu_s")}
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "hwm_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_s": (int(stat[11]) + int(stat[12])) / ticks,  # utime and stime: fields 14 and 15 of stat
    }


# -- subprocesses ---------------------------------------------------------------------------------


def run_python(code: str, env: Mapping[str, str], cwd: Path, timeout: float = 600) -> tuple[float, str]:
    """Run ``python -c code``; return (wall seconds including interpreter start and imports, stdout)."""
    started = time.perf_counter()
    out = subprocess.run([PY, "-c", code], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"subprocess failed with {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return wall, out.stdout


def run_python_logged(
    code: str, env: Mapping[str, str], cwd: Path, log: Path, timeout: float = 600
) -> tuple[float, float]:
    """Run ``python -c code`` with stdout and stderr into ``log`` (as our worker runs its training child).

    Returns (wall seconds, seconds from start to the last write to ``log``), so that the end of the
    work can be told apart from the interpreter's shutdown.
    """
    started_wall, started = time.time(), time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run([PY, "-c", code], env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed with {proc.returncode}:\n{log.read_text()[-4000:]}")
    return wall, log.stat().st_mtime - started_wall


def plain_train_code(data_yaml: str, epochs: int, save_dir: Path, hyp: Mapping[str, Any]) -> str:
    """Plain ultralytics: what a careful offline user runs by hand (the same settings our child applies)."""
    scratch = "Path(os.environ['YOLO_CONFIG_DIR']).parent"
    return f"""
import os
from pathlib import Path
from ultralytics import YOLO, settings
scratch = {scratch}
settings.update({{**{dict(ULTRALYTICS_SETTINGS)!r}, 'runs_dir': str(scratch / 'runs'),
                  'weights_dir': str(scratch / 'weights'), 'datasets_dir': str(scratch / 'datasets')}})
YOLO({BASE_MODEL!r}).train(data={data_yaml!r}, epochs={epochs}, device='cpu', project={str(save_dir.parent)!r},
                           name={save_dir.name!r}, exist_ok=True, **{dict(hyp)!r})
"""


# -- a deployment ---------------------------------------------------------------------------------


class Bench:
    """A scratch folder with a real Redis; settings, workers and managers on it; all torn down on close."""

    def __init__(self, prefix: str = "ytm-bench-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.managers: list[YoloTaskManager] = []
        self.redis: EmbeddedRedis | None = None
        self._previous_sigterm: Any = None

    def __enter__(self) -> Bench:
        # SIGTERM becomes SystemExit so that close() still runs and stops what we started.
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_exit)
        try:
            self.redis = EmbeddedRedis(self.root / "redis").start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def path(self, name: str) -> Path:
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def settings(self, **overrides: Any) -> Settings:
        """Fresh storage root, key prefix and node name on the shared Redis; default intervals otherwise."""
        tag = uuid.uuid4().hex[:8]
        values: dict[str, Any] = {
            "storage_root": self.root / f"store-{tag}",
            "redis_url": self.redis_url,
            "key_prefix": f"bench{tag}",
            "node": f"bench{tag}",
            # Datasets and images live beside the storage roots: opened to every user, as an operator would.
            "shared_data_dirs": (self.root / "datasets", self.root / "images"),
        }
        values.update(overrides)
        return Settings(**values)

    def dataset(self, name: str) -> Path:
        """A fresh copy of the generated sample dataset (ultralytics writes label caches beside it)."""
        return make_sample_dataset(self.root / "datasets" / name, **DATASET_SIZE)

    def data_yaml(self, dataset: Path, dest: Path) -> str:
        """The ``data=`` file our worker would write for ``dataset`` (absolute ``path:``, no ``download:``)."""
        return write_training_data(inspect_dataset(dataset), dest)

    def offline_env(self, scratch: str) -> dict[str, str]:
        return offline_env(os.environ, self.path(scratch))

    def start_worker(self, settings: Settings, timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], float]:
        """``ytm worker --device cpu`` as the integration tests start it; return it and its start-up seconds."""
        log = settings.state_dir / f"worker-{len(self.workers)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**offline_env(os.environ, self.path(f"worker-scratch-{len(self.workers)}")), **settings.to_env()}
        started = time.perf_counter()
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "yolo_task_manager.cli",
                    "worker",
                    "--device",
                    "cpu",
                    "--exit-with-parent",
                    str(os.getpid()),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.workers.append(proc)
        client = redis.Redis.from_url(self.redis_url)
        presence, queue = WorkerPresence(client, Keys(settings.key_prefix)), queue_for_device("cpu", settings.node)
        try:
            while presence.last_beat(queue) is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}: {log.read_text()[-2000:]}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"worker did not register in {timeout:g}s: {log.read_text()[-2000:]}")
                time.sleep(0.02)
        finally:
            client.close()
        return proc, time.perf_counter() - started

    def manager(self, settings: Settings) -> YoloTaskManager:
        """A producer in redis_url mode (settings carry the URL): it starts no Redis and no worker."""
        mgr = YoloTaskManager(LocalFileSystemStorage(settings.storage_root), default_device="cpu", settings=settings)
        self.managers.append(mgr)
        return mgr

    def close(self) -> None:
        for mgr in self.managers:
            try:
                mgr.close()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"warning: closing a manager: {exc}", file=sys.stderr)
        self.managers.clear()
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()  # warm shutdown: a running training is asked to stop, then its group killed
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group id is its pid
                proc.wait()
        self.workers.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if os.environ.get("YTM_BENCH_KEEP") == "1":
            print(f"kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
