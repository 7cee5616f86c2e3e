"""``ytm``: the command line. Exit codes: 0 ok, 1 failed run or error, 2 usage, 3 device unavailable,
4 Redis or database unavailable."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from yolo_task_manager.errors import BrokerUnavailable, DeviceUnavailable, YoloTaskManagerError
from yolo_task_manager.settings import Settings

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DEVICE, EXIT_BROKER = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ytm", description="Multi-user offline YOLO training on Celery workers.")
    parser.add_argument("--root", type=Path, help="storage root (default: $YTM_STORAGE_ROOT or ./ytm-data)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train on a generated sample dataset with an embedded Redis and CPU worker")
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--imgsz", type=int, default=64)

    worker = sub.add_parser("worker", help="consume one device's queue (concurrency 1)")
    worker.add_argument("--device", required=True, help="'cpu' or 'cuda:N'")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--exit-with-parent", type=int, metavar="PID", help=argparse.SUPPRESS)

    flower = sub.add_parser("flower", help="start Flower on the configured broker")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1")

    for name, help_text in (("runs", "list a user's runs"), ("models", "list a user's models")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--user", required=True)
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(storage_root=args.root)
    try:
        return int(COMMANDS[args.command](args, settings) or EXIT_OK)
    except DeviceUnavailable as exc:
        print(f"ytm: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    except BrokerUnavailable as exc:
        print(f"ytm: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except YoloTaskManagerError as exc:
        print(f"ytm: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.workers.launch import run_worker

    if not settings.redis_url:
        raise BrokerUnavailable("a worker needs YTM_REDIS_URL (and YTM_DATABASE_URL for a shared registry)")
    run_worker(settings, args.device, loglevel=args.loglevel, parent_pid=args.exit_with_parent)
    return EXIT_OK


def _flower(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise BrokerUnavailable("flower needs YTM_REDIS_URL")
    argv = [sys.executable, "-m", "celery", "--broker", settings.redis_url, "flower",
            f"--port={args.port}", f"--address={args.address}"]  # fmt: skip
    os.execv(sys.executable, argv)


def _print_epoch(run_id: str, epoch: int, metrics: dict[str, float]) -> None:
    losses = "  ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in metrics.items() if k.startswith("train/"))
    maps = "  ".join(
        f"{k.split('/')[1].removesuffix('(B)')} {v:.3f}" for k, v in metrics.items() if k.startswith("metrics/")
    )
    print(f"epoch {epoch:>3}/{int(metrics.get('epochs', 0)) or '?'}  {losses}  {maps}  ({metrics['elapsed']:.1f}s)",
          flush=True)  # fmt: skip


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.api_client import YoloTaskManager
    from yolo_task_manager.datasets.sample import make_sample_dataset
    from yolo_task_manager.storage import LocalFileSystemStorage

    root = settings.storage_root
    dataset = make_sample_dataset(root / "datasets" / "shapes")
    base = "yolov8n.pt" if (settings.pretrained_dir / "yolov8n.pt").is_file() else "yolov8n.yaml"
    hint = "" if base.endswith(".pt") else f"  (copy yolov8n.pt into {settings.pretrained_dir}/ to fine-tune)"
    print(f"storage root: {root}\ndataset: {dataset}\nbase model: {base}{hint}")
    started = time.time()
    with YoloTaskManager(LocalFileSystemStorage(root), default_device="cpu", settings=settings) as mgr:
        print(f"embedded Redis and CPU worker up in {time.time() - started:.1f}s")
        run_id = mgr.train(
            "demo", base, str(dataset), epochs=args.epochs, run_name=f"shapes-{time.strftime('%Y%m%d-%H%M%S')}",
            callbacks={"on_metrics": lambda r, e, m: _print_epoch(r, e, {**m, "epochs": args.epochs})},
            imgsz=args.imgsz, batch=8, workers=0, plots=False,
        )  # fmt: skip
        print(f"run {run_id} queued")
        run = mgr.wait("demo", run_id)
        time.sleep(0.5)  # let the last callbacks print before the summary
        print(f"run {run.status.value}" + (f": {run.reason}" if run.reason else ""))
        for model in mgr.list_models("demo"):
            print(
                f"model {model.name}: {model.task}, labels {list(model.labels)}, {model.size_bytes} bytes, {model.path}"
            )
        if run.status.value == "completed":
            val = sorted((dataset / "images" / "val").iterdir())[:2]
            for p in mgr.infer("demo", run.run_name, val, conf=0.01, save_annotated=True):
                found = ", ".join(f"{d.class_name} {d.confidence:.2f}" for d in p.detections[:5]) or "nothing"
                print(f"infer {Path(p.source).name}: {found}  -> {p.annotated_path}")
    return EXIT_OK if run.status.value == "completed" else EXIT_ERROR


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.ids import validate_id
    from yolo_task_manager.registry import Registry

    runs = Registry(settings.sql_url).list_runs(validate_id(args.user, "user"))
    if args.json:
        print(json.dumps([_jsonable(asdict(r)) for r in runs], indent=2))
    for r in [] if args.json else runs:
        print(
            f"{r.run_id}  {r.run_name:<24} {r.status.value:<11} epoch {r.last_epoch or 0}/{r.epochs}  {r.reason or ''}"
        )
    return EXIT_OK


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.ids import validate_id
    from yolo_task_manager.storage import storage_from_settings

    models = storage_from_settings(settings).list_models(validate_id(args.user, "user"))
    if args.json:
        print(json.dumps([_jsonable(asdict(m)) for m in models], indent=2))
    for m in [] if args.json else models:
        print(f"{m.name:<24} {m.task:<9} {len(m.labels)} classes  {m.size_bytes:>9} bytes  {m.path}")
    return EXIT_OK


COMMANDS = {"demo": _demo, "worker": _worker, "flower": _flower, "runs": _runs, "models": _models}

if __name__ == "__main__":
    sys.exit(main())
