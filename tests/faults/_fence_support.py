"""Helpers of the fencing fault tests: a /proc sampler of training children, and checks a user would make.

The deployments are tests/integration's (``Stack``: a real Redis, real ``ytm worker`` processes, real
ultralytics training at imgsz 64); a test module imports the fixtures it uses from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from yolo_task_manager import YoloTaskManager

TRAIN_CHILD = "yolo_task_manager.workers.train_child"


class ChildSampler:
    """Counts, every ``interval`` seconds, the training children of one run in the process table (/proc):
    interpreters whose command line runs ``train_child`` on a job file of that run."""

    def __init__(self, run_id: str, interval: float = 0.05) -> None:
        self.run_id = run_id
        self.interval = interval
        self.most = 0
        self.samples = 0
        self.seen: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="child-sampler", daemon=True)

    def children(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            # Only the interpreter itself: the sandbox's gate shells and bwrap carry the same words in their argv.
            if (argv[0].decode(errors="replace") == sys.executable and TRAIN_CHILD.encode() in argv
                    and any(self.run_id.encode() in part for part in argv)):  # fmt: skip
                found.append(int(entry))
        return found

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            now = self.children()
            self.seen.update(now)
            self.most = max(self.most, len(now))
            self.samples += 1

    def __enter__(self) -> ChildSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def loads(*checkpoints: Path) -> bool:
    """Whether torch loads every one of ``checkpoints`` (in a child: no torch in the test process)."""
    probe = "import sys, torch\nfor p in sys.argv[1:]: torch.load(p, map_location='cpu', weights_only=False)\n"
    probe += "print('ok')"
    out = subprocess.run([sys.executable, "-c", probe, *map(str, checkpoints)], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == ["ok"]


def predicts(mgr: YoloTaskManager, user_id: str, model_name: str, fixtures_dir: Path, readable: Path) -> bool:
    """Whether the published model answers a prediction on a real photograph (copied where workers read)."""
    image = Path(shutil.copyfile(fixtures_dir / "images" / "bus.jpg", readable / "bus.jpg"))
    predictions = mgr.infer(user_id, model_name, str(image), conf=0.001, imgsz=64)
    return len(predictions) == 1 and predictions[0].error is None and (predictions[0].height or 0) > 0


def worker_log(settings_state_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(settings_state_dir.glob("worker-*.log")))
