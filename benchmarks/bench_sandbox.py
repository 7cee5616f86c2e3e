"""What the sandbox costs a child at start-up: plain ``subprocess`` vs ``spawn()`` without and with bubblewrap.

    .venv/bin/python benchmarks/bench_sandbox.py [--rounds 10]

Two children: ``python -c pass`` (the bare start-up) and ``python -c "import torch, ultralytics"`` (what
a training child loads first). Three arms, in a rotating order each round: **plain** is
``subprocess.run`` with the child's environment; **gate** is ``spawn(sandboxed=False)``: the same, plus
the per-job cgroups (4 GiB, 512 processes) made, entered at the gate and removed; **sandbox** is
``spawn(sandboxed=True)``: the gate and bubblewrap. Each time runs from the call to the end of
``close()``, so the cgroups' removal is in it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import PY, fmt_table, median, percentile, print_header

from yolo_task_manager.workers.sandbox import SandboxPolicy, job_policy, spawn

CHILDREN = ("pass", "import torch, ultralytics")
ARMS = ("plain", "gate", "sandbox")


def run_once(arm: str, code: str, policy: SandboxPolicy) -> float:
    started = time.perf_counter()
    if arm == "plain":
        subprocess.run([PY, "-c", code], env=dict(policy.env), cwd=policy.cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, check=True)  # fmt: skip
    else:
        with spawn([PY, "-c", code], policy, sandboxed=arm == "sandbox", stdout=subprocess.DEVNULL) as job:
            if job.wait() != 0:
                raise RuntimeError(f"{arm}: {code!r} exited with {job.returncode}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ytm-bench-sandbox-", dir="/var/tmp"))
    try:
        job_dir = root / "alice" / "runs" / "r1"
        job_dir.mkdir(parents=True)
        policy = job_policy(job_dir, base_env=os.environ, hide=(root,), memory_bytes=4 << 30, max_processes=512)
        with spawn([PY, "-c", "pass"], policy, sandboxed=True) as job:
            job.wait()
            limits = "; ".join(job.limits.described)
        print_header("Sandbox start-up", {"rounds": args.rounds, "limits": limits, "bwrap": shutil.which("bwrap")})
        for code in CHILDREN:
            run_once("plain", code, policy)  # warm the page cache for every arm alike
            times: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for i in range(args.rounds):
                for arm in ARMS[i % 3 :] + ARMS[: i % 3]:
                    times[arm].append(run_once(arm, code, policy))
            plain = times["plain"]
            rows = [
                (arm, f"{median(t):.3f}", f"{percentile(t, 90):.3f}", f"{median(t) - median(plain):+.3f}",
                 f"{median([a / b for a, b in zip(t, plain, strict=True)]):.3f}")
                for arm, t in times.items()
            ]  # fmt: skip
            print(f"## `python -c {code!r}`\n")
            print(fmt_table(["arm", "median s", "p90 s", "median - plain s", "median of ratios to plain"], rows))
            print(flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
