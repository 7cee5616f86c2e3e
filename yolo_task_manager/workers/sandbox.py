"""The sandbox every process that loads tenant content runs in: bubblewrap, an allowlisted environment, limits.

The child sees the interpreter, the system's libraries and the paths its policy names, nothing else: no
network, no other tenant, no registry or Redis data, none of the worker's variables. Memory and process
counts are capped per job (``limits.JobLimits``).

Signals do not cross bubblewrap: a signal sent to the spawned pid reaches bwrap, which dies of it and takes
the sandbox down. Ask a sandboxed child to stop over a control pipe instead (``request_stop`` and
``watch_control``).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from yolo_task_manager.errors import InvalidInput, SandboxUnavailable
from yolo_task_manager.settings import SANDBOX_MODES
from yolo_task_manager.workers.limits import JobLimits
from yolo_task_manager.workers.offline import offline_env

__all__ = [
    "SCRATCH", "SandboxPolicy", "SandboxedProcess", "bwrap_argv", "child_env", "job_policy", "keep_alive",
    "request_stop", "require_sandbox", "sandbox_available", "spawn", "watch_control",
]  # fmt: skip

log = logging.getLogger(__name__)

SCRATCH = ".scratch"
"""In a job's folder: the child's home, caches and ultralytics config, so that no job reuses another's."""

_PASSED = frozenset({
    "PATH", "LANG", "TZ", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "MPLCONFIGDIR",
    "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME", "HF_HUB_OFFLINE",
    "LD_LIBRARY_PATH",  # where GPU containers (Kubernetes' device plugin) keep the driver's libcuda
})  # fmt: skip
_PASSED_PREFIXES = ("LC_", "OPENBLAS_")
_SECRET = re.compile(r"^(YTM_|REDIS|DATABASE|AWS_)|PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
# What the loader, time zones, Debian's alternatives and fontconfig read; never all of /etc (shadow, ssh keys).
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "alternatives", "fonts")
_TOPS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_GATE = 'read -r go || exit 125; exec "$@" </dev/null'
_OUTER_GATE = 'read -r go || exit 125; exec "$@"'  # keeps the gate on stdin for the gate inside bwrap
_STOP = b"s"
_ALIVE = b"a"
_Output = int | IO[bytes] | None


@dataclass(frozen=True, kw_only=True)
class SandboxPolicy:
    """What one job's child may see and use.

    ``read_only`` and ``writable`` are shown at their own paths (tenant inputs; the job's own folder); where
    one lies inside the other, the deeper one wins (a writable folder inside a read-only tenant area).
    ``masked`` folders inside them show empty. No bind of the interpreter may expose a folder in ``hide``
    (the storage root). ``env`` is the child's whole environment: build it with ``child_env``.
    """

    read_only: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    masked: tuple[Path, ...] = ()
    hide: tuple[Path, ...] = ()
    env: Mapping[str, str]
    cwd: Path
    memory_bytes: int | None = None
    max_processes: int | None = None
    gpu: bool = False

    def __post_init__(self) -> None:
        for path in (*self.read_only, *self.writable, *self.masked, *self.hide, self.cwd):
            if not Path(path).is_absolute():
                raise InvalidInput(f"sandbox paths must be absolute, got {path}")


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted variables of ``base``, plus ``extra``: a sandboxed child's whole environment.

    Raises:
        InvalidInput: ``extra`` names a YTM_ setting or what looks like a credential.
    """
    refused = sorted(name for name in extra if _SECRET.search(name))
    if refused:
        raise InvalidInput(f"a sandboxed child must not receive {', '.join(refused)}: pass it paths and flags only")
    env = {k: v for k, v in base.items() if (k in _PASSED or k.startswith(_PASSED_PREFIXES)) and not _SECRET.search(k)}
    return {**env, **extra}


def job_policy(job_dir: Path, *, base_env: Mapping[str, str], read_only: Sequence[Path] = (),
               writable: Sequence[Path] = (), masked: Sequence[Path] = (), hide: Sequence[Path] = (),
               memory_bytes: int | None = None, max_processes: int | None = None,
               gpu: bool = False) -> SandboxPolicy:  # fmt: skip
    """The policy of a job that writes only ``job_dir`` (and ``writable``), with its home and caches in
    ``job_dir/.scratch``."""
    scratch = job_dir / SCRATCH
    (scratch / "home").mkdir(parents=True, exist_ok=True)
    env = child_env(base_env, {**offline_env({}, scratch), "HOME": str(scratch / "home")})
    return SandboxPolicy(read_only=tuple(read_only), writable=(job_dir, *writable), masked=tuple(masked),
                         hide=tuple(hide), env=env, cwd=job_dir, memory_bytes=memory_bytes,
                         max_processes=max_processes, gpu=gpu)  # fmt: skip


@functools.cache
def _isolation(bwrap: str) -> tuple[str, ...] | None:
    """The isolation flags this bwrap accepts here, or None when it cannot build a sandbox."""
    common = ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL")
    # --disable-userns (bwrap 0.8) keeps the child from making namespaces of its own, a common exploit path.
    for flags in ((*common, "--disable-userns"), common):
        probe = [bwrap, *flags, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return flags
    return None


def sandbox_available() -> bool:
    """Whether bubblewrap is on PATH and can build a sandbox here (probed once per bwrap)."""
    bwrap = shutil.which("bwrap")
    return bwrap is not None and _isolation(bwrap) is not None


def require_sandbox(mode: str) -> bool:
    """Whether to sandbox under ``mode`` ("on", "off" or "auto", from ``Settings.sandbox``).

    Raises:
        SandboxUnavailable: ``mode`` is "on" and bubblewrap cannot build a sandbox here.
    """
    if mode not in SANDBOX_MODES:
        raise InvalidInput(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {mode!r}")
    if mode == "off":
        return False
    if not sandbox_available():
        if mode == "on":
            raise SandboxUnavailable()
        return False
    return True


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _interpreter_paths(hide: Sequence[Path]) -> list[Path]:
    """The interpreter's prefixes (stdlib, site-packages) and this package's own folder.

    Not the rest of sys.path: its first entry is the worker's script folder or working directory, which
    may be /tmp or the storage root. A child that needs more (another editable install) gets it in read_only.
    """
    chosen: list[Path] = [Path("/usr")]
    package = Path(os.path.abspath(__file__)).parents[1]
    for path in sorted({Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
                       | {package}, key=lambda p: len(p.parts)):  # fmt: skip
        if any(p == path or p in path.parents for p in chosen):
            continue
        if any(_overlaps(path, h) for h in hide):
            raise InvalidInput(f"{path} holds the interpreter and would expose {hide}: move one of them")
        chosen.append(path)
    return chosen[1:]


def bwrap_argv(policy: SandboxPolicy, argv: Sequence[str], *, info_fd: int | None = None) -> list[str]:
    """The bubblewrap command line that runs ``argv`` under ``policy`` (reporting on ``info_fd`` once set up).

    Raises:
        SandboxUnavailable: bubblewrap is missing or cannot build a sandbox here.
    """
    bwrap = shutil.which("bwrap")
    flags = _isolation(bwrap) if bwrap else None
    if bwrap is None or flags is None:
        raise SandboxUnavailable()
    exposed = [h for h in policy.hide for top in ("/usr", *_TOPS, "/etc") if _overlaps(h, Path(top))]
    if exposed:
        raise InvalidInput(f"{exposed[0]} lies in a system folder that every sandbox shows: move it")
    # --as-pid-1: the command is pid 1 (no bwrap init), so that its death, which --die-with-parent
    # arms before it execs, ends the whole pid namespace.
    out = [bwrap, *flags, "--as-pid-1", *(("--info-fd", str(info_fd)) if info_fd is not None else ())]
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr"]
    for top in _TOPS:
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin
            out += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            out += ["--ro-bind", top, top]
    out += [arg for name in _ETC for arg in ("--ro-bind-try", f"/etc/{name}", f"/etc/{name}")]
    out += [arg for path in _interpreter_paths(policy.hide) for arg in ("--ro-bind", str(path), str(path))]
    if policy.gpu:  # the device nodes and the PCI tree CUDA and NVML read; the driver's libraries are in /usr
        out += [arg for dev in sorted(glob.glob("/dev/nvidia*")) for arg in ("--dev-bind", dev, dev)]
        out += ["--ro-bind", "/sys", "/sys"]
    binds = [("--bind", p) for p in policy.writable] + [("--ro-bind", p) for p in policy.read_only]
    binds += [("--tmpfs", p) for p in policy.masked]
    # Shallow first, so that a deeper bind lands on top; at one depth read-only and masks come last and win.
    order = {"--bind": 0, "--ro-bind": 1, "--tmpfs": 2}
    for flag, path in sorted(binds, key=lambda b: (len(Path(b[1]).parts), order[b[0]])):
        out += [flag, str(path)] if flag == "--tmpfs" else [flag, str(path), str(path)]
    # The sandbox's own root is a tmpfs: read-only, so that nothing but the writable binds and /tmp takes writes.
    return [*out, "--remount-ro", "/", "--chdir", str(policy.cwd), "--", *argv]


class SandboxedProcess:
    """A spawned child under its job's limits; ``close()`` kills whatever is left and removes its cgroups."""

    def __init__(self, process: subprocess.Popen[bytes], limits: JobLimits, *, sandboxed: bool) -> None:
        self.process, self.limits, self.sandboxed = process, limits, sandboxed

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """As ``Popen.returncode``: bwrap reports a child killed by signal N as 128+N, turned back into -N."""
        code = self.process.returncode
        if self.sandboxed and code is not None and 128 < code <= 128 + 64:
            return 128 - code
        return code

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.wait(timeout)
        return self.returncode

    def memory_exhausted(self) -> bool:
        """Whether the kernel killed a process of the job at its memory limit (known with a cgroup only)."""
        return self.limits.memory_exhausted()

    def kill(self) -> None:
        """SIGKILL the child's process group and every process in its cgroups (a plain child may setsid)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.limits.kill()
        self.process.wait()

    def close(self) -> None:
        self.kill()
        self.limits.remove()

    def __enter__(self) -> SandboxedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn(argv: Sequence[str], policy: SandboxPolicy, *, sandboxed: bool, pass_fds: Sequence[int] = (),
          stdout: _Output = None, stderr: _Output = None) -> SandboxedProcess:  # fmt: skip
    """Start ``argv`` under ``policy``: in bubblewrap when ``sandboxed``, else plainly with the same
    environment, limits and new session (``os.killpg(job.pid, ...)`` reaches the whole group).

    The child waits at a gate, a shell reading a line, while this process puts it under the job's limits:
    nothing forks before they hold (unlike ``preexec_fn``, safe in a worker with threads). Sandboxed, a
    second gate inside bwrap holds the command until both of bwrap's processes have armed
    ``--die-with-parent``; a worker that dies before then closes the gate, and the sandbox ends.
    """
    info, report = os.pipe() if sandboxed else (-1, -1)
    inner = ["/bin/sh", "-c", _GATE, "ytm-gate", *argv]
    command = ["/bin/sh", "-c", _OUTER_GATE, "ytm-gate", *bwrap_argv(policy, inner, info_fd=report)] if sandboxed \
        else ["/bin/sh", "-c", _GATE, "ytm-gate", *argv]  # fmt: skip
    limits = JobLimits(memory_bytes=policy.memory_bytes, max_processes=policy.max_processes, gpu=policy.gpu)
    gate, release = os.pipe()
    try:
        process = subprocess.Popen(command, stdin=gate, stdout=stdout, stderr=stderr, env=dict(policy.env),
                                   pass_fds=(*pass_fds, *([report] if sandboxed else [])), cwd=policy.cwd,
                                   start_new_session=True)  # fmt: skip
    except BaseException:
        os.close(release)
        limits.remove()
        raise
    finally:
        for fd in (gate, report) if sandboxed else (gate,):
            os.close(fd)
    job = SandboxedProcess(process, limits, sandboxed=sandboxed)
    try:
        limits.enter(process.pid)
        os.write(release, b"go\n")
        if sandboxed and _await_inner_gate(info):
            os.write(release, b"go\n")
    except BaseException:
        job.close()
        raise
    finally:
        os.close(release)
        if sandboxed:
            os.close(info)
    log.info("sandbox %s, pid %s: %s", "on" if sandboxed else "off", job.pid, "; ".join(limits.described) or "no limit")
    return job


def _await_inner_gate(info: int, timeout: float = 30.0) -> bool:
    """Wait until the command inside bwrap is the gate shell; False if bwrap failed first.

    bwrap arms --die-with-parent in its outer process before it writes the command's pid on ``info``, and
    in the command's process just before exec.
    """
    data, deadline = b"", time.monotonic() + timeout
    while b"}" not in data and select.select([info], [], [], max(0.0, deadline - time.monotonic()))[0]:
        chunk = os.read(info, 4096)
        if not chunk:
            return False
        data += chunk
    try:
        pid = int(json.loads(data)["child-pid"])
        while not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/bin/sh\0"):
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.0005)
    except (ValueError, KeyError, OSError, TimeoutError):  # gone already, or stuck: the caller sees it exit
        log.warning("sandbox: bwrap did not start its command (info: %r)", data)
        return False
    return True


def request_stop(control_fd: int) -> None:
    """Ask a child that runs ``watch_control`` to stop, through the write end of its control pipe."""
    with contextlib.suppress(BrokenPipeError):
        os.write(control_fd, _STOP)


def keep_alive(control_fd: int) -> None:
    """Tell a child that runs ``watch_control`` with a ``silence`` limit that its worker still owns the job."""
    with contextlib.suppress(BrokenPipeError):
        os.write(control_fd, _ALIVE)


def watch_control(
    control_fd: int,
    on_stop: Callable[[], None],
    on_close: Callable[[], None],
    *,
    silence: float | None = None,
) -> threading.Thread:
    """In the child: call ``on_stop`` at each stop request, and ``on_close`` once the worker's end is closed
    (the worker is gone, or done with the child) or, given ``silence``, once it has said nothing for that
    many seconds (the worker froze: another may own the job by now)."""

    def run() -> None:
        while not silence or select.select([control_fd], [], [], silence)[0]:
            chunk = os.read(control_fd, 64)
            if not chunk:
                break
            if _STOP in chunk:
                on_stop()
        on_close()

    thread = threading.Thread(target=run, name="ytm-control", daemon=True)
    thread.start()
    return thread
