"""``python -m tests.faults.launcher worker --device cpu``: a real worker (``launch.run_worker``, settings
from ``YTM_*``) whose training child is the simulated trainer (``sim_trainer.py``)."""

from __future__ import annotations

import argparse
import os
import sys

from tests.faults import sim_trainer
from yolo_task_manager.launch import run_worker
from yolo_task_manager.settings import Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tests.faults.launcher")
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    # As `ytm worker` does (cli._worker): OpenCV reads its limit once, at its first decode.
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(settings.max_image_pixels)
    run_worker(settings, args.device, training_command=sim_trainer.command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
