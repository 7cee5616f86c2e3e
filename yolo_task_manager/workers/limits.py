"""Per-job memory and process limits: cgroups made for the job where this process may make them, else rlimits.

A cgroup is the real limit: it counts every process of the job, whatever its session, and lets the worker
kill them all. The rlimit fallbacks are weaker. RLIMIT_AS caps address space, not memory, and CUDA
reserves far more than it uses: on a GPU only a cgroup limits memory. RLIMIT_NPROC counts all processes
of the user, and does not bind root at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["JobLimits", "remove_stale_cgroups"]

log = logging.getLogger(__name__)

_FILES = {
    ("memory", False): ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
    ("memory", True): ("memory.max", "memory.swap.max"),
    ("pids", False): ("pids.max",),
    ("pids", True): ("pids.max",),
}
"""Per controller and cgroup version: the limit, then the swap limit (absent without swap accounting)."""


class JobLimits:
    """The limits of one job: its cgroups, made here (``remove()`` deletes them), and rlimits where none could be.

    ``described`` says in words what is in force, for the worker's log.
    """

    def __init__(self, *, memory_bytes: int | None, max_processes: int | None, gpu: bool) -> None:
        self.memory_bytes, self.max_processes, self.gpu = memory_bytes, max_processes, gpu
        self.cgroups: dict[str, Path] = {}
        self.described: list[str] = []
        self._oom_kills = 0
        name = f"ytm-{_pid_namespace()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        for controller, value in (("memory", memory_bytes), ("pids", max_processes)):
            group = _make_cgroup(controller, value, name) if value is not None else None
            if group is not None:
                self.cgroups[controller] = group

    def enter(self, pid: int) -> None:
        """Put ``pid`` under these limits; it must not have forked yet, or its children escape them."""
        for controller, value, rlimit, rlimit_name in (
            ("memory", self.memory_bytes, resource.RLIMIT_AS, "RLIMIT_AS"),
            ("pids", self.max_processes, resource.RLIMIT_NPROC, "RLIMIT_NPROC"),
        ):
            group = self.cgroups.get(controller)
            if value is None:
                continue
            if group is not None:
                (group / "cgroup.procs").write_text(str(pid))
                self.described.append(f"{controller} {value} by cgroup {group}")
            elif controller == "memory" and self.gpu:
                self.described.append("memory unlimited: no memory cgroup, and RLIMIT_AS would break CUDA")
            else:
                resource.prlimit(pid, rlimit, (value, value))
                root = " (which does not bind root)" if rlimit_name == "RLIMIT_NPROC" and os.geteuid() == 0 else ""
                self.described.append(f"{controller} {value} by {rlimit_name}{root}")

    def kill(self) -> None:
        """SIGKILL every process in the job's cgroups."""
        _kill_members(self.cgroups.values())

    def memory_exhausted(self) -> bool:
        """Whether the kernel killed a process of the job for going over its cgroup's memory limit."""
        group = self.cgroups.get("memory")
        for file in (group / "memory.events", group / "memory.oom_control") if group is not None else ():  # v2, v1
            with contextlib.suppress(OSError):
                for line in file.read_text().splitlines():
                    if line.startswith("oom_kill "):
                        self._oom_kills = max(self._oom_kills, int(line.split()[1]))
        return self._oom_kills > 0

    def remove(self) -> None:
        """Kill what is left in the job's cgroups and delete them."""
        self.memory_exhausted()  # read before the counters go with the cgroup
        _remove(list(self.cgroups.values()))
        self.cgroups.clear()


def remove_stale_cgroups() -> list[Path]:
    """Kill what is left in the job cgroups of workers that died before their ``remove()``, and delete them.

    Call when a worker starts, before its first job: a group is stale when the worker named in it is gone,
    or is this process (a container's worker may get the same pid again). Groups made in another pid
    namespace are left alone: their workers' pids mean nothing here.
    """
    removed = []
    for controller in ("memory", "pids"):
        found = _cgroup_base(controller)
        for group in found[0].glob(f"ytm-{_pid_namespace()}-*-*") if found is not None else ():
            owner = group.name.split("-")[2]
            if owner.isdigit() and int(owner) != os.getpid() and Path(f"/proc/{owner}").exists():
                continue
            _remove([group])
            removed.append(group)
    return removed


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _cgroup_base(controller: str) -> tuple[Path, bool] | None:
    """Where this process may make a child cgroup for ``controller``, and whether that is cgroup v2."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:  # v1: a hierarchy per controller, mounted at /sys/fs/cgroup/<controller>
        _, names, path = line.split(":", 2)
        base = Path("/sys/fs/cgroup", controller, path.lstrip("/"))
        if controller in names.split(",") and base.is_dir():
            return base, False
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    base = Path("/sys/fs/cgroup", (own or "/").lstrip("/"))
    # v2 lets a child cgroup use a controller only where the parent delegates it (and so holds no process).
    with contextlib.suppress(OSError):
        if own is not None and controller in (base / "cgroup.subtree_control").read_text().split():
            return base, True
    return None


def _make_cgroup(controller: str, value: int, name: str) -> Path | None:
    found = _cgroup_base(controller)
    if found is None:
        return None
    base, v2 = found
    group = base / name
    try:
        group.mkdir()
        limit, *swap = _FILES[(controller, v2)]
        (group / limit).write_text(str(value))
        for file in swap:
            if (group / file).exists():  # no swap either: v1 caps memory+swap, v2 swap alone
                (group / file).write_text("0" if v2 else str(value))
    except OSError as exc:
        log.info("no %s cgroup under %s (%s): falling back to an rlimit", controller, base, exc)
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def _remove(groups: list[Path]) -> None:
    """Kill the groups' processes and delete the groups (a cgroup goes once its last process has)."""
    deadline = time.monotonic() + 10
    while True:
        _kill_members(groups)
        for group in groups:
            with contextlib.suppress(OSError):  # EBUSY until the killed processes are gone
                group.rmdir()
        if not any(group.exists() for group in groups) or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    for group in groups:
        if group.exists():
            log.warning("could not remove %s: processes %s are still in it", group, _procs(group))


def _kill_members(groups: Iterable[Path]) -> None:
    for group in groups:
        for pid in _procs(group):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _procs(group: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
    return []
