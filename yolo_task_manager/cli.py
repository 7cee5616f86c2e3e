"""``ytm``: the command line. Exit codes: 0 ok, 1 failed run or error, 2 usage, 3 device unavailable,
4 Redis or database unavailable."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from yolo_task_manager.errors import BrokerUnavailable, DeviceUnavailable, InvalidInput, YoloTaskManagerError
from yolo_task_manager.redact import install_redaction, redact
from yolo_task_manager.settings import Settings

__all__ = ["build_parser", "main"]

from yolo_task_manager.constants import EXIT_BROKER, EXIT_DEVICE, EXIT_ERROR, EXIT_OK

DEMO_EPOCHS = 40
DEMO_BATCH = 8
"""64 generated images, 40 epochs of 8-image batches at 64 px, with ``nbs`` (ultralytics' nominal batch)
matched to the batch so that the optimizer steps every batch: about a minute on 2 CPU cores, and the model
finds the shapes in 8 of the 8 validation images. At the default ``nbs=64`` it would step once per 8 batches
and, in a demo's few epochs, learn nothing."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ytm", description="Multi-user offline YOLO training on Celery workers.")
    parser.add_argument("--root", type=Path, help="storage root (default: $YTM_STORAGE_ROOT or ./ytm-data)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train on a generated sample dataset with an embedded Redis and CPU worker")
    demo.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    demo.add_argument("--imgsz", type=int, default=64)

    worker = sub.add_parser("worker", help="consume one device's queue (concurrency 1)")
    worker.add_argument("--device", required=True, help="'cpu' or 'cuda:N'")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--exit-with-parent", type=int, metavar="PID", help=argparse.SUPPRESS)

    flower = sub.add_parser("flower", help="start Flower on the configured broker")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument(
        "--unauthenticated-api", action="store_true", help="serve Flower's HTTP API without login (trusted networks)"
    )

    metrics = sub.add_parser("metrics", help="serve Prometheus metrics: runs, queues, workers, progress, inference")
    metrics.add_argument("--port", type=int, default=9108)
    metrics.add_argument("--address", default="127.0.0.1")

    def user_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--user", required=True)
        p.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")
        return p

    user_command("runs", "list a user's runs")
    user_command("models", "list a user's models, their metrics, exports and plots")
    train = user_command("train", "queue a training run (needs YTM_REDIS_URL and running workers)")
    train.add_argument(
        "--model", required=True, help="a file in {root}/_system/pretrained/, a path in your folder, or a yaml"
    )
    train.add_argument("--data", required=True, help="dataset folder (data.yaml or class folders)")
    train.add_argument("--epochs", type=int, required=True)
    train.add_argument("--name", help="run name, also the published model's name")
    train.add_argument("--device", help="'cpu', 'cuda:N', 'cuda' or 'auto'")
    train.add_argument("--max-duration", help="e.g. 90m, 2h")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an ultralytics argument")
    train.add_argument("--follow", action="store_true", help="then show its epochs until it ends")
    for name, help_text in (("stop", "stop a run (it keeps a resumable checkpoint)"), ("resume", "resume a run")):
        user_command(name, help_text).add_argument("run_id")
    logs = user_command("logs", "show a run's events; -f follows it live with a progress bar")
    logs.add_argument("run_id")
    logs.add_argument("-f", "--follow", action="store_true")
    infer = user_command("infer", "predict with a model")
    infer.add_argument("--model", required=True)
    infer.add_argument("images", nargs="+", help="files, folders, globs or videos on the shared volume")
    infer.add_argument("--conf", type=float, default=0.25)
    infer.add_argument("--iou", type=float, default=0.7)
    infer.add_argument("--save", action="store_true", help="write annotated images")
    export = user_command("export", "export a model")
    export.add_argument("--model", required=True)
    export.add_argument("--format", required=True, help="torchscript, onnx, openvino or engine")
    return parser


def _say(*values: object, file: Any = None, flush: bool = False) -> None:
    """``print``, with every credential masked: nothing the CLI writes shows a password."""
    print(redact(" ".join(str(v) for v in values)), file=file or sys.stdout, flush=flush)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. This process is ours: its logs are redacted, and its umask gives ``file_mode``."""
    install_redaction()
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(storage_root=args.root)
        os.umask(settings.umask)
        return int(COMMANDS[args.command](args, settings) or EXIT_OK)
    except DeviceUnavailable as exc:
        _say(f"ytm: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    except BrokerUnavailable as exc:
        _say(f"ytm: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except YoloTaskManagerError as exc:
        _say(f"ytm: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.launch import run_worker

    if not settings.redis_url:
        raise BrokerUnavailable("a worker needs YTM_REDIS_URL (and YTM_DATABASE_URL for a shared registry)")
    # OpenCV reads its limit once, at its first decode: the formats Pillow has no header reader for
    # meet the same limit as the rest (workers/inference.py reads it back from here).
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(settings.max_image_pixels)
    run_worker(settings, args.device, loglevel=args.loglevel, parent_pid=args.exit_with_parent)
    return EXIT_OK


def _flower(args: argparse.Namespace, settings: Settings) -> int:
    """Exec Flower with its broker URL in CELERY_BROKER_URL, never on its command line (``ps`` shows that)."""
    if not settings.redis_url:
        raise BrokerUnavailable("flower needs YTM_REDIS_URL")
    env = {**os.environ, "CELERY_BROKER_URL": settings.redis_url}
    # Flower reads every option from FLOWER_<NAME>: basic auth comes from the environment, never argv.
    logins = [login for login in env.pop("FLOWER_BASIC_AUTH", "").split(",") if login]
    if any(not user or not password for user, _, password in (login.partition(":") for login in logins)):
        raise InvalidInput("FLOWER_BASIC_AUTH must be user:password (several joined with commas)")
    if logins:
        env["FLOWER_BASIC_AUTH"] = ",".join(logins)
    elif not _is_loopback(args.address) and not env.get("FLOWER_AUTH"):
        raise InvalidInput(
            f"flower on {args.address} would show every user's runs to anyone: set FLOWER_BASIC_AUTH=user:password "
            "(or Flower's OAuth variables), or serve it on --address 127.0.0.1"
        )
    if args.unauthenticated_api:
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    argv = [sys.executable, "-m", "celery", "flower", f"--port={args.port}", f"--address={args.address}"]
    os.execve(sys.executable, argv, env)


def _metrics(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.exporter import serve

    _say(f"Prometheus metrics on http://{args.address}:{args.port}/metrics")
    serve(settings, args.address, args.port)
    return EXIT_OK


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """One terminal line per epoch: progress bar, training losses, the scores this task has, elapsed time."""
    done = round(20 * epoch / max(epochs, 1))
    losses = " ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in metrics.items() if k.startswith("train/"))
    scores = {k.split("/")[1].removesuffix("(B)"): v for k, v in metrics.items() if k.startswith("metrics/")}
    shown = " ".join(f"{k} {scores[k]:.3f}" for k in ("precision", "recall", "mAP50", "mAP50-95", "accuracy_top1")
                     if k in scores)  # fmt: skip
    return f"[{'#' * done}{'.' * (20 - done)}] {epoch:>3}/{epochs}  {losses}  {shown}  {metrics.get('elapsed', 0):.1f}s"


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.api_client import YoloTaskManager
    from yolo_task_manager.datasets.sample import found_shapes, make_sample_dataset
    from yolo_task_manager.storage import LocalFileSystemStorage

    root = settings.storage_root
    dataset = make_sample_dataset(root / "demo" / "datasets" / "shapes-64", train=64, val=8)
    base = "yolov8n.pt" if (settings.pretrained_dir / "yolov8n.pt").is_file() else "yolov8n.yaml"
    hint = "" if base.endswith(".pt") else f"  (copy yolov8n.pt into {settings.pretrained_dir}/ to fine-tune)"
    _say(f"storage root: {root}\ndataset: {dataset}\nbase model: {base}{hint}")
    started = time.time()
    with YoloTaskManager(LocalFileSystemStorage(root), default_device="cpu", settings=settings) as mgr:
        _say(f"embedded Redis and CPU worker up in {time.time() - started:.1f}s")
        run_id = mgr.train(
            "demo", base, str(dataset), epochs=args.epochs, run_name=f"shapes-{time.strftime('%Y%m%d-%H%M%S')}",
            callbacks={"on_metrics": lambda r, e, m: _say(_epoch_line(e, args.epochs, m), flush=True)},
            imgsz=args.imgsz, batch=DEMO_BATCH, nbs=DEMO_BATCH, workers=0,
        )  # fmt: skip
        _say(f"run {run_id} queued")
        run = mgr.wait("demo", run_id)
        time.sleep(0.5)  # let the last callbacks print before the summary
        _say(f"run {run.status.value} in {time.time() - started:.0f}s" + (f": {run.reason}" if run.reason else ""))
        if run.status.value != "completed":
            return EXIT_ERROR
        model = next(m for m in mgr.list_models("demo") if m.name == run.run_name)
        _say(f"model {model.name}: {model.task}, labels {list(model.labels)}, {model.size_bytes} bytes, {model.path}")
        val = sorted((dataset / "images" / "val").iterdir())
        found = 0
        for p in mgr.infer("demo", run.run_name, val, conf=0.25, save_annotated=True):
            image = Path(p.source)
            hit = found_shapes(dataset / "labels" / "val" / f"{image.stem}.txt", p.detections)
            found += hit
            seen = ", ".join(f"{d.class_name} {d.confidence:.2f}" for d in p.detections[:5]) or "nothing"
            _say(f"  {image.name}: {seen}{'' if hit else '  (missed)'}  -> {p.annotated_path}")
        _say(f"found the shapes in {found} of {len(val)} validation images (conf 0.25, IoU 0.5)")
        plot = next((p for p in model.plots if Path(p).name == "results.png"), None)
        if plot:
            _say(f"training curves: open {plot}  (e.g. xdg-open {plot})")
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.ids import validate_id
    from yolo_task_manager.registry import Registry

    runs = Registry(settings.sql_url).list_runs(validate_id(args.user, "user"))
    if args.json:
        _say(json.dumps([_jsonable(asdict(r)) for r in runs], indent=2))
    for r in [] if args.json else runs:
        _say(
            f"{r.run_id}  {r.run_name:<24} {r.status.value:<11} epoch {r.last_epoch or 0}/{r.epochs}  {r.reason or ''}"
        )
    return EXIT_OK


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from yolo_task_manager.ids import validate_id
    from yolo_task_manager.storage import storage_from_settings

    models = storage_from_settings(settings).list_models(validate_id(args.user, "user"))
    if args.json:
        _say(json.dumps([_jsonable(asdict(m)) for m in models], indent=2))
    for m in [] if args.json else models:
        metric = f"{m.key_metric[0]} {m.key_metric[1]:.3f}" if m.key_metric else ""
        _say(f"{m.name:<24} {m.task:<9} {len(m.labels):>3} classes  {metric:<16} {m.size_bytes:>9} bytes  {m.path}")
        for name in (*m.exports.values(), *m.plots):
            _say(f"{'':<26}{name}")
    return EXIT_OK


def _manager(settings: Settings) -> Any:
    from yolo_task_manager.api_client import YoloTaskManager

    if not settings.redis_url:
        raise BrokerUnavailable("this command needs YTM_REDIS_URL (and the same YTM_DATABASE_URL as the workers)")
    return YoloTaskManager(settings=settings)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _train(args: argparse.Namespace, settings: Settings) -> int:
    hyp = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--set takes KEY=VALUE, got {item!r}")
        hyp[key] = _value(value)
    with _manager(settings) as mgr:
        run_id = mgr.train(args.user, args.model, args.data, args.epochs, run_name=args.name, device=args.device,
                           max_duration=args.max_duration, **hyp)  # fmt: skip
        _say(json.dumps({"run_id": run_id}) if args.json else run_id, flush=True)
        return _follow(mgr, args.user, run_id, args.json) if args.follow else EXIT_OK


def _stop_or_resume(args: argparse.Namespace, settings: Settings) -> int:
    with _manager(settings) as mgr:
        if args.command == "stop":
            answered = mgr.stop(args.user, args.run_id)
        else:
            mgr.resume(args.user, args.run_id)
            answered = True
        status = mgr.get_run(args.user, args.run_id).status.value
    _say(json.dumps({"run_id": args.run_id, "status": status, "changed": answered}) if args.json else status)
    return EXIT_OK


def _follow(mgr: Any, user_id: str, run_id: str, as_json: bool, until_done: bool = True) -> int:
    status = None
    for _, event in mgr.subscribe(user_id, run_id, until_done=until_done, timeout=None if until_done else 0.5):
        if as_json:
            _say(event.to_json(), flush=True)
        elif event.type.value == "metrics":
            _say(_epoch_line(event.epoch or 0, event.epochs or 0, event.metrics), flush=True)
        elif event.type.value == "status":
            _say(f"{event.status.value}" + (f": {event.reason}" if event.reason else ""), flush=True)
        status = event.status or status
    return EXIT_ERROR if status is not None and status.value in ("failed", "timed_out") else EXIT_OK


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    with _manager(settings) as mgr:
        return _follow(mgr, args.user, args.run_id, args.json, until_done=args.follow)


def _infer(args: argparse.Namespace, settings: Settings) -> int:
    with _manager(settings) as mgr:
        predictions = mgr.infer(args.user, args.model, args.images, conf=args.conf, iou=args.iou,
                                save_annotated=args.save)  # fmt: skip
    if args.json:
        _say(json.dumps([p.to_dict() for p in predictions], indent=2))
    for p in [] if args.json else predictions:
        found = ", ".join(f"{d.class_name} {d.confidence:.2f}" for d in p.detections[:8])
        found = found or ", ".join(f"{name} {conf:.2f}" for _, name, conf in p.top_k[:3]) or "nothing"
        _say(f"{p.source}{'' if p.frame is None else f'#{p.frame}'}: {p.error or found}"
              + (f" -> {p.annotated_path}" if p.annotated_path else ""))  # fmt: skip
    return EXIT_ERROR if any(p.error for p in predictions) else EXIT_OK


def _export(args: argparse.Namespace, settings: Settings) -> int:
    with _manager(settings) as mgr:
        path = mgr.export(args.user, args.model, args.format)
    _say(json.dumps({"path": str(path)}) if args.json else path)
    return EXIT_OK


COMMANDS = {
    "demo": _demo, "worker": _worker, "flower": _flower, "metrics": _metrics, "runs": _runs, "models": _models,
    "train": _train, "stop": _stop_or_resume, "resume": _stop_or_resume, "logs": _logs, "infer": _infer,
    "export": _export,
}  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
