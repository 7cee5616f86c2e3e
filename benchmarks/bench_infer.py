"""Inference on a running worker vs plain ultralytics: throughput, per-call overhead, cold start, memory.

    .venv/bin/python benchmarks/bench_infer.py [--reps 3] [--batch 32] [--imgsz 640] [--single 15]
                                               [--mem-calls 500] [--mem-imgsz 128] [--no-dense] [--no-bytes]

Set-up: two detection checkpoints built from ``yolov8n.yaml`` in an offline subprocess (no weights can be
downloaded) and published with ``storage.save_model(..., meta={"task": "detect", "imgsz": --imgsz})``:

- ``init``:  the untrained network; it finds nothing (0 detections per image, at any ``conf``);
- ``dense``: the same weights with the class-0 bias of the detection head raised to 2.0, so that every
  image gets ``max_det`` = 300 detections: the worst case for building, sending and decoding results.

Images: ``bus.jpg`` and ``zidane.jpg`` from ``/work/shared/fixtures/images``, copied ``--batch`` times
into the scratch folder (distinct files, alternating), predicted at ``--imgsz``.

Parts, all on one ``ytm worker --device cpu`` started by the script (and one more for the memory part):

(b) cold vs warm: the first ``infer`` after the worker started (it imports ultralytics and loads the
    model), then warm calls; ``handle.model_loads`` shows the cache misses. Then the ``dense`` model's
    first call (a model load alone, ultralytics already imported). For scale: the plain subprocess's
    own ``import ultralytics``, ``YOLO(path)`` and first predictions.
(a) throughput, arms rotated inside each repetition, one ``--batch``-image call each:
    - plain:   ``YOLO(path).predict(paths, imgsz, conf=0.25, iou=0.7, batch=--batch, device="cpu")`` in a
               long-lived subprocess that loaded the model once; only the predict call is timed;
    - predict(): our worker's own function (``yolo_task_manager.workers.inference.predict``) in that same
               subprocess, on its own ``YOLO`` instance: what the worker computes, without any messaging;
    - ours:    ``mgr.infer_async(user, model, paths).get()`` from this process (redis_url mode), warm
               cache; the worker's log gives each task's own runtime (Celery's "succeeded in", which
               covers the task body and storing the result in Redis);
    - ours (bytes): the same images passed as JPEG bytes (base64 inside the message), ``init`` only.
    Then ``--single`` interleaved 1-image calls (plain, predict(), ours, and ours on a missing file: a
    full round trip that predicts nothing, i.e. the messaging overhead alone).
(c) memory: a fresh worker; its VmRSS after 1, 10, every 50 and ``--mem-calls`` 1-image calls at
    ``--mem-imgsz``, against a fresh plain subprocess doing the same calls, interleaved.

Nothing is asserted; medians are reported. The worker and the plain subprocesses all run predictions with
one torch thread: ultralytics sets ``torch.set_num_threads(min(8, nproc - 1))`` for ``device="cpu"``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import redis
from _common import PY, USER, Bench, fmt_table, median, percentile, print_header, proc_stats, run_python

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.predictions import Prediction
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.workers.offline import ULTRALYTICS_SETTINGS

FIXTURES = Path("/work/shared/fixtures/images")
IMAGES = ("bus.jpg", "zidane.jpg")
CONF, IOU = 0.25, 0.7
DENSE_BIAS = 2.0
SUCCEEDED = re.compile(r"Task ytm\.infer\[([0-9a-f-]+)\] succeeded in ([0-9.e-]+)s")

MAKE_MODELS = """
import torch
from ultralytics import YOLO
YOLO('yolov8n.yaml').save({init!r})
model = YOLO({init!r})
with torch.no_grad():
    for branch in model.model.model[-1].cv3:  # Detect head: one class-logit conv per scale
        branch[-1].bias[0] = {bias!r}
model.save({dense!r})
print(len(model.names))
"""

PLAIN_SERVER = """
import json, os, sys, time
from pathlib import Path
started = time.perf_counter()
from ultralytics import YOLO, settings
import_s = time.perf_counter() - started
scratch = Path(os.environ['YOLO_CONFIG_DIR']).parent
settings.update({{**{settings!r}, 'runs_dir': str(scratch / 'runs'), 'weights_dir': str(scratch / 'weights'),
                  'datasets_dir': str(scratch / 'datasets')}})
from yolo_task_manager.ids import check_access
from yolo_task_manager.workers.inference import predict as ytm_predict

def reply(obj):
    sys.stdout.write('@@' + json.dumps(obj) + '\\n')
    sys.stdout.flush()

models = {{}}
reply({{'pid': os.getpid(), 'import_s': import_s}})
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd['op'] == 'quit':
        break
    if cmd['op'] == 'load':
        t = time.perf_counter()
        models[cmd['key']] = YOLO(cmd['model'], task='detect')
        reply({{'s': time.perf_counter() - t}})
        continue
    model = models[cmd['key']]
    opts = {{'imgsz': cmd['imgsz'], 'conf': cmd['conf'], 'iou': cmd['iou'], 'device': 'cpu'}}
    t = time.perf_counter()
    if cmd['op'] == 'plain':
        results = model.predict(cmd['paths'], batch=cmd['batch'], verbose=False, **opts)
        s = time.perf_counter() - t
        detections = sum(len(r.boxes) for r in results)
    else:  # our worker's predict() on the same inputs, in this process
        root = Path(cmd['root'])  # the same per-user path check as the worker's
        out = ytm_predict(model, 'detect', [{{'path': p}} for p in cmd['paths']], opts, None,
                          lambda p: check_access(p, root, cmd['user'], also=tuple(map(Path, cmd['shared']))))
        s = time.perf_counter() - t
        detections = sum(len(p.get('detections') or ()) for p in out)
    import torch
    reply({{'s': s, 'detections': detections, 'threads': torch.get_num_threads()}})
"""


class PlainServer:
    """A long-lived offline subprocess holding plain ``YOLO`` models; only its predict calls are timed."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.log = bench.root / f"{name}.log"
        started = time.perf_counter()
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [PY, "-c", PLAIN_SERVER.format(settings=dict(ULTRALYTICS_SETTINGS))],
                env=bench.offline_env(f"{name}-scratch"), cwd=bench.path(name), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
            )  # fmt: skip
        hello = self._read()
        self.pid: int = hello["pid"]
        self.import_s: float = hello["import_s"]
        self.startup_s = time.perf_counter() - started

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"plain subprocess ended ({self.proc.wait()}): {self.log.read_text()[-3000:]}")

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()  # by PID: only the process this object started
                self.proc.wait()


def task_runtimes(log: Path) -> dict[str, float]:
    """Celery's "Task ytm.infer[id] succeeded in Xs" lines of a worker log: task id -> seconds."""
    return {m.group(1): float(m.group(2)) for m in SUCCEEDED.finditer(log.read_text(errors="replace"))}


def ours_call(mgr: Any, model: str, images: Any, **options: Any) -> dict[str, Any]:
    started = time.perf_counter()
    handle = mgr.infer_async(USER, model, images, CONF, IOU, **options)
    submitted = time.perf_counter()
    predictions = handle.get(600)
    done = time.perf_counter()
    return {
        "s": done - started,
        "submit_s": submitted - started,
        "id": handle._result.id,  # to find the task's own runtime in the worker log
        "model_loads": handle.model_loads,
        "detections": sum(len(p.detections) for p in predictions),
        "errors": sum(not p.ok for p in predictions),
        "predictions": predictions,
    }


def wait_unregistered(bench: Bench, prefix: str, node: str, timeout: float = 30.0) -> None:
    client = redis.Redis.from_url(bench.redis_url)
    presence, queue = WorkerPresence(client, Keys(prefix)), queue_for_device("cpu", node)
    deadline = time.monotonic() + timeout
    try:
        while presence.last_beat(queue) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()


def serialisation_estimate(predictions: list[Prediction], loads: int, reps: int = 5) -> dict[str, float]:
    """What the reply costs to encode and decode, timed here on a copy of it (stdlib json, like kombu's)."""
    reply = {"ok": True, "predictions": [p.to_dict() for p in predictions], "model_loads": loads}
    dumps, loads_s, build = [], [], []
    for _ in range(reps):
        t = time.perf_counter()
        text = json.dumps(reply)
        dumps.append(time.perf_counter() - t)
        t = time.perf_counter()
        data = json.loads(text)
        loads_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        [Prediction.from_dict(p) for p in data["predictions"]]
        build.append(time.perf_counter() - t)
    return {"bytes": len(text), "dumps": median(dumps), "loads": median(loads_s), "from_dict": median(build)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed batch calls per arm and model (default 3)")
    parser.add_argument("--batch", type=int, default=32, help="images per throughput call (default 32)")
    parser.add_argument("--imgsz", type=int, default=640, help="the models' imgsz, used for (a) and (b)")
    parser.add_argument("--single", type=int, default=15, help="interleaved 1-image calls per arm (default 15)")
    parser.add_argument("--warm", type=int, default=5, help="warm 1-image calls after the cold one (default 5)")
    parser.add_argument("--mem-calls", type=int, default=500, help="1-image calls for the memory part")
    parser.add_argument("--mem-imgsz", type=int, default=128, help="imgsz of the memory part (default 128)")
    parser.add_argument("--no-dense", action="store_true", help="skip the 300-detections-per-image model")
    parser.add_argument("--no-bytes", action="store_true", help="skip the in-memory (JPEG bytes) arm")
    args = parser.parse_args(argv)
    if args.mem_calls < 10:
        parser.error("--mem-calls must be at least 10")

    print_header(
        "bench_infer: inference on a worker vs plain ultralytics",
        {
            "throughput": f"{args.reps} timed calls of {args.batch} images per arm and model, imgsz {args.imgsz}",
            "1-image calls": f"{args.single} per arm, imgsz {args.imgsz}",
            "memory": f"{args.mem_calls} 1-image calls at imgsz {args.mem_imgsz}, fresh worker",
            "thresholds": f"conf {CONF}, iou {IOU}, max_det 300 (default)",
            "models": "yolov8n.yaml untrained ('init', 0 detections)"
            + ("" if args.no_dense else f"; same + class-0 bias {DENSE_BIAS} ('dense', 300 detections/image)"),
            "images": f"{' / '.join(IMAGES)} alternating (810x1080, 1280x720), {args.batch} distinct copies",
        },
    )
    started_all = time.perf_counter()
    with Bench(prefix="ytm-bench-infer-") as bench, ExitStack() as servers:
        settings = bench.settings()
        storage = LocalFileSystemStorage(settings.storage_root)

        # -- models and images ----------------------------------------------------------------------
        ckpt = bench.path("checkpoints")
        make = MAKE_MODELS.format(init=str(ckpt / "init.pt"), dense=str(ckpt / "dense.pt"), bias=DENSE_BIAS)
        _, out = run_python(make, bench.offline_env("make-scratch"), ckpt)
        labels = [str(i) for i in range(int(out.strip().splitlines()[-1]))]
        names = ["init"] if args.no_dense else ["init", "dense"]
        for name in names:
            storage.save_model(USER, ckpt / f"{name}.pt", name, labels, meta={"task": "detect", "imgsz": args.imgsz})
        model_path = {name: str(storage.get_model(USER, name).path) for name in names}
        images = bench.path("images")
        paths = []
        for i in range(args.batch):
            src = FIXTURES / IMAGES[i % len(IMAGES)]
            paths.append(str(shutil.copyfile(src, images / f"{i:03d}_{src.name}")))
        jpeg_bytes = [Path(p).read_bytes() for p in paths]
        missing = str(images / "missing.jpg")

        # -- (b) cold vs warm -----------------------------------------------------------------------
        worker_log = settings.state_dir / f"worker-{len(bench.workers)}.log"
        worker, startup = bench.start_worker(settings)
        mgr = bench.manager(settings)
        mem = {"worker registered (idle)": proc_stats(worker.pid, tree=True)}
        print(f"worker start-up (spawn -> registered in Redis): {startup:.2f} s, pid {worker.pid}", flush=True)
        cold_rows: list[list[Any]] = []
        one = [paths[0]]
        for name in names:
            cold = ours_call(mgr, name, one)
            mem[f"after first call ({name})"] = proc_stats(worker.pid, tree=True)
            warm = [ours_call(mgr, name, one) for _ in range(args.warm)]
            what = "import ultralytics + load model + predict" if name == "init" else "load model + predict"
            cold_rows.append([f"ours, first call ({name}): {what}", ms(cold["s"]), cold["model_loads"], cold["id"]])
            cold_rows.append(
                [f"ours, next {args.warm} calls ({name}), median", ms(median(c["s"] for c in warm)),
                 ",".join(str(c["model_loads"]) for c in warm), [c["id"] for c in warm]]
            )  # fmt: skip
        plain = servers.enter_context(closing(PlainServer(bench, "plain")))
        load_s = plain.call(op="load", key="plain:init", model=model_path["init"])["s"]
        first = [plain.call(op="plain", key="plain:init", paths=one, imgsz=args.imgsz, conf=CONF, iou=IOU, batch=1)
                 for _ in range(1 + args.warm)]  # fmt: skip
        cold_rows += [
            ["plain subprocess: `from ultralytics import YOLO`", ms(plain.import_s), "-", None],
            ["plain subprocess: `YOLO(init.pt)`", ms(load_s), "-", None],
            ["plain subprocess: first predict (1 image)", ms(first[0]["s"]), "-", None],
            [f"plain subprocess: next {args.warm} predicts, median", ms(median(f["s"] for f in first[1:])), "-", None],
        ]
        runtimes = task_runtimes(worker_log)
        cold_table = []
        for label, latency, loads, ids in cold_rows:
            task = [runtimes[i] for i in ([ids] if isinstance(ids, str) else ids or []) if i in runtimes]
            cold_table.append([label, latency, loads, ms(median(task)) if task else "-"])
        print("\n(b) cold vs warm, 1 image at imgsz", args.imgsz)
        print(fmt_table(["call", "latency ms", "model_loads", "worker task ms"], cold_table), flush=True)

        # -- (a) throughput -------------------------------------------------------------------------
        arms = ["plain", "predict()", "ours"] + ([] if args.no_bytes else ["ours (bytes)"])
        for name in names:
            for key in ([f"plain:{name}"] if name != "init" else []) + [f"fn:{name}"]:  # plain:init is loaded
                plain.call(op="load", key=key, model=model_path[name])

        def run_arm(arm: str, name: str, batch_paths: list[str], imgsz: int | None = None) -> dict[str, Any]:
            size = imgsz or args.imgsz
            if arm == "plain":
                return plain.call(op="plain", key=f"plain:{name}", paths=batch_paths, imgsz=size, conf=CONF,
                                  iou=IOU, batch=len(batch_paths))  # fmt: skip
            if arm == "predict()":
                return plain.call(op="fn", key=f"fn:{name}", paths=batch_paths, imgsz=size, conf=CONF, iou=IOU,
                                  root=str(settings.storage_root), user=USER,
                                  shared=[str(d) for d in settings.shared_data_dirs])  # fmt: skip
            if arm == "ours (bytes)":
                data = [jpeg_bytes[paths.index(p)] for p in batch_paths]
                return ours_call(mgr, name, data)
            return ours_call(mgr, name, batch_paths)

        def timed(arm: str, name: str, fn: Any) -> dict[str, Any]:
            pid = plain.pid if arm in ("plain", "predict()") else worker.pid
            cpu = proc_stats(pid, tree=True)["cpu_s"]
            result = fn()
            result["cpu_s"] = proc_stats(pid, tree=True)["cpu_s"] - cpu
            return result

        model_arms = [(name, arm) for name in names for arm in arms if not (arm == "ours (bytes)" and name != "init")]
        for name, arm in model_arms:  # untimed warm-up: predictor set-up, first-batch allocations
            run_arm(arm, name, paths)
        print(f"\nwarm-up done ({time.perf_counter() - started_all:.0f} s since start)", flush=True)
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in model_arms}
        for rep in range(args.reps):
            for name in names:
                order = [a for n, a in model_arms if n == name]
                shift = rep % len(order)
                for arm in order[shift:] + order[:shift]:
                    samples[(name, arm)].append(timed(arm, name, lambda a=arm, n=name: run_arm(a, n, paths)))
            print(
                f"rep {rep + 1}/{args.reps}: "
                + ", ".join(f"{n}/{a} {samples[(n, a)][-1]['s']:.2f} s" for n, a in model_arms),
                flush=True,
            )
        mem["after the throughput part"] = proc_stats(worker.pid, tree=True)
        plain_mem = proc_stats(plain.pid)

        # 1-image calls, interleaved; "ours (missing file)" is the round trip without a prediction
        single_arms = ["plain", "predict()", "ours", "ours (missing file)"]
        singles: dict[str, list[dict[str, Any]]] = {arm: [] for arm in single_arms}
        for i in range(args.single):
            shift = i % len(single_arms)
            for arm in single_arms[shift:] + single_arms[:shift]:
                if arm == "ours (missing file)":
                    singles[arm].append(timed(arm, "init", lambda: ours_call(mgr, "init", [missing])))
                else:
                    singles[arm].append(timed(arm, "init", lambda a=arm: run_arm(a, "init", one)))
        runtimes = task_runtimes(worker_log)

        print(f"\n(a) throughput: {args.batch} images per call, imgsz {args.imgsz}, medians of {args.reps}")
        threads = samples[(names[0], "plain")][-1].get("threads")
        print(f"torch threads in the plain subprocess: {threads} (the worker's: see its CPU s per call vs wall s)")
        rows, ratios = [], {}
        for name in names:
            base = median(s["s"] for s in samples[(name, "plain")])
            for arm in [a for n, a in model_arms if n == name]:
                got = samples[(name, arm)]
                secs = median(s["s"] for s in got)
                task = [runtimes[s["id"]] for s in got if s.get("id") in runtimes]
                per_rep = [s["s"] / p["s"] for s, p in zip(got, samples[(name, "plain")], strict=True)]
                ratios[(name, arm)] = base / secs
                rows.append(
                    [
                        name,
                        arm,
                        f"{args.batch / secs:.2f}",
                        f"{secs:.3f}",
                        f"{min(s['s'] for s in got):.3f}-{max(s['s'] for s in got):.3f}",
                        f"{median(task):.3f}" if task else "-",
                        f"{median(s['cpu_s'] for s in got):.2f}",
                        median(s["detections"] for s in got),
                        f"{base / secs:.3f} (per rep {median(1 / r for r in per_rep):.3f})",
                    ]
                )
        print(
            fmt_table(
                ["model", "arm", "images/s", "s per call", "min-max s", "worker task s", "CPU s per call",
                 "detections", "throughput vs plain"],
                rows,
            )
        )  # fmt: skip

        print(f"\n1-image calls (init, imgsz {args.imgsz}), {args.single} interleaved calls per arm")
        srows = []
        for arm in single_arms:
            got = singles[arm]
            task = [runtimes[s["id"]] for s in got if s.get("id") in runtimes]
            srows.append(
                [
                    arm,
                    ms(median(s["s"] for s in got)),
                    ms(percentile((s["s"] for s in got), 90)),
                    ms(median(task)) if task else "-",
                    ms(median(s["submit_s"] for s in got)) if "submit_s" in got[0] else "-",
                    ms(median(s["cpu_s"] for s in got)),
                ]
            )
        print(
            fmt_table(
                ["arm", "p50 ms", "p90 ms", "worker task ms", "infer_async() returned ms", "CPU ms per call"], srows
            )
        )
        overhead = median(s["s"] for s in singles["ours"]) - median(s["s"] for s in singles["plain"])
        rt = median(s["s"] for s in singles["ours (missing file)"])
        print(f"ours - plain, 1 image: {ms(overhead)} ms per call; round trip without prediction: {ms(rt)} ms")

        print("\nreply size and decode cost, estimated here on a copy of the last reply (stdlib json)")
        erows = []
        for name in names:
            last = samples[(name, "ours")][-1]
            est = serialisation_estimate(last["predictions"], last["model_loads"])
            erows.append([name, last["detections"], f"{est['bytes'] / 1024:.0f}", ms(est["dumps"]),
                          ms(est["loads"]), ms(est["from_dict"])])  # fmt: skip
        print(
            fmt_table(
                ["model", "detections", "reply KiB", "json.dumps ms", "json.loads ms", "Prediction.from_dict ms"], erows
            )
        )
        if not args.no_bytes:
            from yolo_task_manager.api_client.inference import encode_sources

            t = time.perf_counter()
            encoded = encode_sources(jpeg_bytes)
            enc_s = time.perf_counter() - t
            size = len(json.dumps(encoded))
            print(
                f"in-memory inputs: {sum(map(len, jpeg_bytes)) / 2**20:.1f} MiB of JPEG -> {size / 2**20:.1f} MiB of"
                f" base64 in the message; encode_sources {ms(enc_s)} ms"
            )

        # -- (c) memory -----------------------------------------------------------------------------
        worker.terminate()
        worker.wait(60)
        wait_unregistered(bench, settings.key_prefix, settings.node)
        servers.close()  # the plain subprocess of (a) and (b)
        worker_log = settings.state_dir / f"worker-{len(bench.workers)}.log"
        worker, _ = bench.start_worker(settings)
        plain = servers.enter_context(closing(PlainServer(bench, "plain-mem")))
        plain.call(op="load", key="plain:init", model=model_path["init"])
        checkpoints = sorted({1, 10, args.mem_calls, *range(50, args.mem_calls + 1, 50)})
        series: list[list[Any]] = [["idle", "-", f"{proc_stats(worker.pid, tree=True)['rss_mib']:.0f}", "-",
                                    f"{proc_stats(plain.pid)['rss_mib']:.0f}"]]  # fmt: skip
        lat_ours, lat_plain = [], []
        mem_started = time.perf_counter()
        for i in range(1, args.mem_calls + 1):
            calls = [("ours", lambda: ours_call(mgr, "init", one, imgsz=args.mem_imgsz)),
                     ("plain", lambda: run_arm("plain", "init", one, args.mem_imgsz))]  # fmt: skip
            for arm, fn in calls if i % 2 else calls[::-1]:
                result = fn()
                (lat_ours if arm == "ours" else lat_plain).append(result["s"])
                if arm == "ours" and result["model_loads"] != 1:
                    print(f"note: call {i} reported model_loads={result['model_loads']}", file=sys.stderr)
            if i in checkpoints:
                w, p = proc_stats(worker.pid, tree=True), proc_stats(plain.pid)
                series.append([i, ms(median(lat_ours[-50:])), f"{w['rss_mib']:.0f}", f"{w['hwm_mib']:.0f}",
                               f"{p['rss_mib']:.0f}"])  # fmt: skip
        mem_s = time.perf_counter() - mem_started
        print(f"\n(c) memory: 1-image calls at imgsz {args.mem_imgsz}, fresh worker, {mem_s:.0f} s for the loop")
        print(
            fmt_table(
                ["calls", "ours p50 ms (last 50)", "worker VmRSS MiB", "worker VmHWM MiB", "plain VmRSS MiB"], series
            )
        )
        at = {row[0]: row for row in series}
        w10, wn = float(at[10][2]), float(at[args.mem_calls][2])
        p10, pn = float(at[10][4]), float(at[args.mem_calls][4])
        print(
            f"worker VmRSS after 10 calls {w10:.0f} MiB, after {args.mem_calls} {wn:.0f} MiB: {wn - w10:+.0f} MiB; "
            f"plain subprocess {p10:.0f} -> {pn:.0f} MiB ({pn - p10:+.0f} MiB)"
        )
        print(
            f"1-image latency at imgsz {args.mem_imgsz} (calls 2-{args.mem_calls}): ours p50 "
            f"{ms(median(lat_ours[1:]))} ms, p99 {ms(percentile(lat_ours[1:], 99))} ms; plain p50 "
            f"{ms(median(lat_plain[1:]))} ms, p99 {ms(percentile(lat_plain[1:], 99))} ms"
        )
        print("\nworker memory during the first worker's life:")
        print(
            fmt_table(
                ["when", "VmRSS MiB", "VmHWM MiB"],
                [[k, f"{v['rss_mib']:.0f}", f"{v['hwm_mib']:.0f}"] for k, v in mem.items()]
                + [["plain subprocess after the throughput part", f"{plain_mem['rss_mib']:.0f}",
                    f"{plain_mem['hwm_mib']:.0f}"]],
            )
        )  # fmt: skip

    print(f"\nthroughput ratio ours/plain ({args.batch} images, imgsz {args.imgsz}), goal >= 0.9:")
    for (name, arm), ratio in ratios.items():
        if arm.startswith("ours"):
            print(f"  {name} / {arm}: {ratio:.3f} ({'met' if ratio >= 0.9 else 'not met'})")
    print(f"total run time {time.perf_counter() - started_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
