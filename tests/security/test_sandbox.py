"""The sandbox, with real bubblewrap: a child sees its own job and nothing of other tenants, the worker or the network.

Every child is the venv's own Python (``sys.executable``): the interpreter works inside. Each test plants a
canary where the child must not reach and checks that it never comes back. Needs bubblewrap with user
namespaces; without them these tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from yolo_task_manager.datasets import inspect_dataset, write_training_data
from yolo_task_manager.errors import InvalidInput, SandboxUnavailable
from yolo_task_manager.values import RunSpec
from yolo_task_manager.workers import sandbox as sandbox_module
from yolo_task_manager.workers.limits import remove_stale_cgroups
from yolo_task_manager.workers.protocol import JOB_FILE, TrainingJob, training_child
from yolo_task_manager.workers.sandbox import (
    SCRATCH,
    SandboxedProcess,
    SandboxPolicy,
    child_env,
    job_policy,
    keep_alive,
    request_stop,
    require_sandbox,
    sandbox_available,
    spawn,
)

# Imported by every child: one attempt per probe, its result or the errno's name.
PRELUDE = """
import errno, json, os, socket, sys
def attempt(fn):
    try:
        return "ok:" + str(fn())
    except Exception as exc:
        code = getattr(exc, "errno", None)
        return "err:" + (errno.errorcode.get(code, str(code)) if code else type(exc).__name__)
def read(path):
    with open(path) as f:
        return f.read()
def write(path):
    with open(path, "w") as f:
        return f.write("tenant was here")
"""


@pytest.fixture(scope="module")
def bwrap() -> None:
    if not sandbox_available():
        message = "the sandbox tests need bubblewrap and user namespaces: `apt install bubblewrap`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True, kw_only=True)
class Storage:
    """A fake storage root: alice's dataset and job, bob's secret, the registry and Redis data, a canary."""

    root: Path
    canary: str
    dataset: Path
    job: Path
    other_run: Path
    bob_secret: Path
    registry: Path
    redis_dump: Path

    def policy(self, **changes: Any) -> SandboxPolicy:
        values: dict[str, Any] = {"read_only": (self.dataset,), "hide": (self.root,), **changes}
        return job_policy(self.job, base_env=os.environ, **values)


@pytest.fixture
def storage_parent() -> Iterator[Path]:
    """A folder outside /tmp, as a real storage root is: the sandbox's /tmp is a tmpfs of its own, where
    bwrap's mount points for binds below /tmp would be writable (privately: nothing reaches the host)."""
    parent = Path(tempfile.mkdtemp(prefix="ytm-sandbox-test-", dir="/var/tmp"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def storage(storage_parent: Path) -> Storage:
    root, canary = storage_parent / "root", f"CANARY-{uuid.uuid4().hex}"
    dataset = root / "alice" / "datasets" / "x"
    (dataset / "images").mkdir(parents=True)
    (dataset / "images" / "a.txt").write_text("alice's own data")
    bob_secret = root / "bob" / "datasets" / "x" / "secret.txt"
    bob_secret.parent.mkdir(parents=True)
    bob_secret.write_text(canary)
    (dataset / "images" / "link.txt").symlink_to(bob_secret)  # a tenant's symlink to a neighbour's file
    other_run = root / "alice" / "runs" / "r0"
    other_run.mkdir(parents=True)
    (other_run / "model.pt").write_text(canary)
    job = root / "alice" / "runs" / "r1"
    job.mkdir(parents=True)
    registry = root / ".ytm" / "registry.db"
    registry.parent.mkdir()
    with sqlite3.connect(registry) as db:
        db.execute("CREATE TABLE runs (secret TEXT)")
        db.execute("INSERT INTO runs VALUES (?)", (canary,))
    db.close()
    redis_dump = root / ".ytm" / "redis" / "dump.rdb"
    redis_dump.parent.mkdir()
    redis_dump.write_text(canary)
    return Storage(root=root, canary=canary, dataset=dataset, job=job, other_run=other_run, bob_secret=bob_secret,
                   registry=registry, redis_dump=redis_dump)  # fmt: skip


def run_child(code: str, policy: SandboxPolicy, timeout: float = 60) -> tuple[SandboxedProcess, dict[str, Any], str]:
    """Run ``code`` (after PRELUDE) in the sandbox; return the finished job, its last JSON line and all output."""
    job = spawn([sys.executable, "-c", PRELUDE + code], policy, sandboxed=True, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        out, _ = job.process.communicate(timeout=timeout)
    finally:
        job.close()
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return job, json.loads(lines[-1]) if lines else {}, text


@pytest.mark.usefixtures("bwrap")
def test_a_child_reads_its_dataset_writes_its_job_and_reaches_no_other_tenant(storage: Storage) -> None:
    # Given alice's job, with her dataset bound read-only and her job folder writable
    s = storage
    code = f"""
print(json.dumps({{
    "own dataset": attempt(lambda: read({str(s.dataset / "images" / "a.txt")!r})),
    "bob's file": attempt(lambda: read({str(s.bob_secret)!r})),
    "symlink to bob's file": attempt(lambda: read({str(s.dataset / "images" / "link.txt")!r})),
    "alice's other run": attempt(lambda: read({str(s.other_run / "model.pt")!r})),
    "write own dataset": attempt(lambda: write({str(s.dataset / "images" / "b.txt")!r})),
    "write own job": attempt(lambda: write({str(s.job / "out.txt")!r})),
    "write storage root": attempt(lambda: write({str(s.root / "x.txt")!r})),
    "write sandbox root": attempt(lambda: write("/x.txt")),
    "write /tmp": attempt(lambda: write("/tmp/ytm-sandbox-probe")),
    "list root": attempt(lambda: sorted(os.listdir({str(s.root)!r}))),
    "list runs": attempt(lambda: sorted(os.listdir({str(s.job.parent)!r}))),
}}))
"""
    # When the child tries to read and write everywhere
    job, seen, out = run_child(code, s.policy())

    # Then it has its own dataset (read-only) and job folder, and nothing of bob or of alice's other run
    assert job.returncode == 0, out
    assert seen["own dataset"] == "ok:alice's own data"
    assert seen["bob's file"] == seen["symlink to bob's file"] == seen["alice's other run"] == "err:ENOENT"
    assert seen["write own dataset"] == "err:EROFS" and not (s.dataset / "images" / "b.txt").exists()
    assert seen["write own job"] == "ok:15" and (s.job / "out.txt").read_text() == "tenant was here"
    assert seen["write storage root"] == seen["write sandbox root"] == "err:EROFS" and not (s.root / "x.txt").exists()
    assert seen["write /tmp"] == "ok:15" and not Path("/tmp/ytm-sandbox-probe").exists()  # a private tmpfs
    assert seen["list root"] == "ok:['alice']" and seen["list runs"] == "ok:['r1']"
    assert s.canary not in out


@pytest.mark.usefixtures("bwrap")
def test_a_training_child_writes_only_its_attempt_folder_and_reads_the_run_s_promoted_state(storage: Storage) -> None:
    # Given a run folder with promoted state, and attempt 2's folder, as the supervisor binds them
    s = storage
    published = s.job / "train" / "weights" / "last.pt"
    published.parent.mkdir(parents=True)
    published.write_text("promoted checkpoint")
    attempt = s.job / "attempts" / "2"
    (attempt / "train").mkdir(parents=True)
    policy = job_policy(attempt, base_env=os.environ, read_only=(s.job, s.dataset), hide=(s.root,))
    code = f"""
print(json.dumps({{
    "read promoted": attempt(lambda: read({str(published)!r})),
    "write promoted": attempt(lambda: write({str(published)!r})),
    "write run folder": attempt(lambda: write({str(s.job / "spec.json")!r})),
    "write own attempt": attempt(lambda: write({str(attempt / "train" / "last.pt")!r})),
}}))
"""
    # When the child tries to write everywhere in its run
    job, seen, out = run_child(code, policy)

    # Then only its attempt folder takes writes; the published state is intact
    assert job.returncode == 0, out
    assert seen["read promoted"] == "ok:promoted checkpoint"
    assert seen["write promoted"] == seen["write run folder"] == "err:EROFS"
    assert seen["write own attempt"] == "ok:15"
    assert published.read_text() == "promoted checkpoint" and not (s.job / "spec.json").exists()


@pytest.mark.usefixtures("bwrap")
def test_the_registry_redis_data_shadow_and_root_s_home_are_out_of_sight(storage: Storage) -> None:
    # Given a registry database and Redis data under the storage root, and the host's /etc and /root
    s = storage
    code = f"""
import sqlite3
print(json.dumps({{
    "registry": attempt(lambda: read({str(s.registry)!r})),
    "registry by sqlite": attempt(lambda: sqlite3.connect({str(s.registry)!r}).execute("SELECT * FROM runs")),
    "redis dump": attempt(lambda: read({str(s.redis_dump)!r})),
    "state dir": attempt(lambda: os.listdir({str(s.registry.parent)!r})),
    "shadow": attempt(lambda: read("/etc/shadow")),
    "etc": attempt(lambda: sorted(os.listdir("/etc"))),
    "root": attempt(lambda: sorted(os.listdir("/root"))),
    "bashrc": attempt(lambda: read("/root/.bashrc")),
}}))
"""
    # When the child looks for them
    job, seen, out = run_child(code, s.policy())

    # Then none is there; /etc holds the loader's files, /root only the path down to the interpreter
    assert job.returncode == 0, out
    assert seen["registry"] == seen["redis dump"] == seen["state dir"] == "err:ENOENT"
    assert seen["registry by sqlite"].startswith("err:")
    assert seen["shadow"] == seen["bashrc"] == "err:ENOENT"
    assert "shadow" not in seen["etc"] and "passwd" not in seen["etc"] and "ld.so.cache" in seen["etc"]
    below_root = [p.name for p in Path(sys.base_prefix).parents if p.parent == Path("/root")]
    assert seen["root"] == f"ok:{below_root}"
    assert s.canary not in out


@pytest.mark.usefixtures("bwrap")
def test_the_worker_s_sys_path_is_not_shown_only_the_interpreter_and_the_package(
    storage: Storage, storage_parent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker whose sys.path starts with its working folder (as `python -m` puts it), say /tmp
    workdir = storage_parent / "worker-cwd"
    workdir.mkdir()
    (workdir / "notes.txt").write_text(storage.canary)
    monkeypatch.syspath_prepend(str(workdir))
    code = f"""
import yolo_task_manager.workers.sandbox as sandbox
print(json.dumps({{"worker's folder": attempt(lambda: os.listdir({str(workdir)!r})), "package": sandbox.__file__}}))
"""
    # When a child runs
    job, seen, out = run_child(code, storage.policy())

    # Then that folder is not bound; the package the child imports is the worker's own
    assert job.returncode == 0, out
    assert seen["worker's folder"] == "err:ENOENT"
    assert seen["package"] == sandbox_module.__file__
    assert storage.canary not in out


@pytest.mark.usefixtures("bwrap")
def test_the_child_has_no_network_not_even_the_host_s_loopback(storage: Storage) -> None:
    # Given a TCP server on the host's 127.0.0.1 (as Redis would be) and an abstract Unix socket
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket(socket.AF_UNIX) as unix:
        port = server.getsockname()[1]
        abstract = f"\0ytm-{storage.canary}"
        unix.bind(abstract)
        unix.listen()
        code = f"""
def connect(family, address):
    with socket.socket(family) as s:
        s.settimeout(3)
        s.connect(address)
        return "connected"
print(json.dumps({{
    "tcp": attempt(lambda: connect(socket.AF_INET, ("127.0.0.1", {port}))),
    "unix": attempt(lambda: connect(socket.AF_UNIX, {abstract!r})),
    "internet": attempt(lambda: connect(socket.AF_INET, ("1.1.1.1", 443))),
    "dns": attempt(lambda: socket.getaddrinfo("example.com", 80)),
    "interfaces": [line.split(":")[0].strip() for line in read("/proc/net/dev").splitlines()[2:]],
}}))
"""
        # When the child tries to reach them, the internet and DNS
        job, seen, out = run_child(code, storage.policy())
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()

    # Then nothing connects and resolves: its only interface is its own loopback
    assert job.returncode == 0, out
    assert seen["tcp"] == "err:ECONNREFUSED" and seen["unix"] == "err:ECONNREFUSED"
    assert seen["internet"] == "err:ENETUNREACH"
    assert seen["dns"].startswith("err:")
    assert seen["interfaces"] == ["lo"]


@pytest.mark.usefixtures("bwrap")
def test_no_worker_setting_or_credential_reaches_the_child(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker whose environment holds its settings and credentials
    for name, value in {
        "YTM_REDIS_URL": "redis://:hunter2@127.0.0.1/0", "YTM_DATABASE_URL": "postgresql://u:hunter2@db/ytm",
        "REDIS_PASSWORD": "hunter2", "DATABASE_URL": "postgresql://u:hunter2@db/x", "AWS_SECRET_ACCESS_KEY": "hunter2",
        "HF_TOKEN": "hunter2", "ULTRALYTICS_API_KEY": "hunter2", "SOME_SECRET": "hunter2",
        "CELERY_BROKER_URL": "redis://:hunter2@r",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    policy = storage.policy()
    code = """
import glob
print(json.dumps({
    "names": sorted(os.environ),
    "environ": attempt(lambda: read("/proc/self/environ")),
    "cmdlines": [attempt(lambda p=p: read(p)) for p in glob.glob("/proc/[0-9]*/cmdline")],
    "environs": [attempt(lambda p=p: read(p)) for p in glob.glob("/proc/[0-9]*/environ")],
}))
"""
    # When the child reads its own and every visible process's environment and command line
    job, seen, out = run_child(code, policy)

    # Then the worker's secrets are nowhere, and the child's variables are the allowlisted ones
    assert job.returncode == 0, out
    assert "hunter2" not in out and "hunter2" not in json.dumps(dict(policy.env))
    assert not [name for name in seen["names"] if name.startswith("YTM_") or "URL" in name]
    assert {"HOME", "YOLO_CONFIG_DIR", "YOLO_OFFLINE", "PATH"} <= set(seen["names"])
    assert seen["cmdlines"] and all(c.startswith("ok:") for c in seen["cmdlines"])  # the child is pid 1
    # And asking for one anyway is refused
    with pytest.raises(InvalidInput, match="REDIS_PASSWORD"):
        child_env(os.environ, {"REDIS_PASSWORD": "hunter2"})


@pytest.mark.usefixtures("bwrap")
def test_a_fork_bomb_hits_the_process_limit_and_ends_by_itself(storage: Storage) -> None:
    # Given a child limited to 64 processes that tries to start 2000, each sleeping 2 s
    code = """
import time
started, failure = 0, None
for _ in range(2000):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = errno.errorcode[exc.errno]
        break
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    started += 1
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(json.dumps({"started": started, "failure": failure}))
"""
    policy = storage.policy(max_processes=64)

    # When it runs
    began = time.monotonic()
    job, seen, out = run_child(code, policy, timeout=60)

    # Then fork fails with EAGAIN well before 2000, and everything is over within seconds
    if not any("pids" in limit and "cgroup" in limit for limit in job.limits.described) and os.geteuid() == 0:
        pytest.skip(f"no pids cgroup here ({job.limits.described}); RLIMIT_NPROC does not bind root")
    assert job.returncode == 0, out
    assert seen["failure"] == "EAGAIN" and 0 < seen["started"] < 64
    assert time.monotonic() - began < 30
    assert job.limits.cgroups == {}  # removed by close()


@pytest.mark.usefixtures("bwrap")
def test_a_memory_hog_is_stopped_at_its_limit(storage: Storage) -> None:
    # Given a child limited to 512 MiB that fills 2 GiB, 64 MiB at a time
    code = """
chunks = []
for i in range(32):
    chunks.append(bytes([i]) * (64 << 20))
    print("allocated", (i + 1) * 64, "MiB", flush=True)
print(json.dumps({"allocated": len(chunks) * 64}))
"""
    # When it runs
    job, seen, out = run_child(code, storage.policy(memory_bytes=512 << 20), timeout=120)

    # Then the kernel kills it at the limit (cgroup), or the allocation fails (RLIMIT_AS)
    assert "allocated" not in seen, out
    if any("memory" in limit and "cgroup" in limit for limit in job.limits.described):
        assert job.returncode == -signal.SIGKILL and job.memory_exhausted(), out
    else:
        assert "MemoryError" in out
    assert "allocated 512 MiB" not in out


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _wait_until(predicate: Any, seconds: float, job: SandboxedProcess | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline or (job is not None and job.process.poll() is not None):
            return False
        time.sleep(0.05)
    return True


GRANDCHILD = """
import os, subprocess, sys, time
# A grandchild in a session of its own, as a tenant's code would hide one.
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", {marker!r}], start_new_session=True)
with open({pid_file!r}, "w") as f:
    f.write(str(sleeper.pid))
time.sleep(1000)
"""


@pytest.mark.usefixtures("bwrap")
def test_killing_the_process_group_ends_the_whole_sandbox(storage: Storage) -> None:
    # Given a sandboxed child whose grandchild runs in a session of its own
    marker, pid_file = f"ytm-grandchild-{storage.canary}", storage.job / "sleeper.pid"
    code = GRANDCHILD.format(marker=marker, pid_file=str(pid_file))
    job = spawn([sys.executable, "-c", code], storage.policy(), sandboxed=True)
    try:
        assert _wait_until(pid_file.exists, 30, job) and _wait_until(lambda: _host_processes_with(marker), 10)

        # When the worker kills the child's process group, as the supervisor does on a timeout
        os.killpg(job.pid, signal.SIGKILL)
        job.process.wait(10)

        # Then the grandchild is gone too, though it was in no group of the worker's
        assert _wait_until(lambda: not _host_processes_with(marker), 10), _host_processes_with(marker)
        assert int(pid_file.read_text()) > 1  # the pid it had inside the sandbox's own pid namespace
    finally:
        job.close()


@pytest.mark.usefixtures("bwrap")
def test_unsandboxed_a_grandchild_that_left_the_group_dies_with_the_job_cgroup(storage: Storage) -> None:
    # Given the sandbox turned off (YTM_SANDBOX=off) and a grandchild that left the process group
    marker, pid_file = f"ytm-grandchild-{storage.canary}", storage.job / "sleeper.pid"
    code = GRANDCHILD.format(marker=marker, pid_file=str(pid_file))
    job = spawn([sys.executable, "-c", code], storage.policy(max_processes=64), sandboxed=False)
    try:
        assert _wait_until(pid_file.exists, 30, job)
        grandchild = int(pid_file.read_text())
        if "pids" not in job.limits.cgroups:
            pytest.skip(f"no pids cgroup here ({job.limits.described}): killpg alone cannot reach such a grandchild")

        # When the worker kills the job
        job.kill()

        # Then the grandchild is gone as well: it was still in the job's cgroup
        assert _wait_until(lambda: _gone(grandchild), 10)
    finally:
        job.close()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


WORKER = """
import json, os, sys, time
from pathlib import Path
from yolo_task_manager.workers.sandbox import job_policy, spawn
policy = job_policy(Path({job!r}), base_env=os.environ, memory_bytes=1 << 30, max_processes=64)
job = spawn([sys.executable, "-c", "import time; time.sleep(1000)", {marker!r}], policy, sandboxed=True)
print(json.dumps([str(group) for group in job.limits.cgroups.values()]), flush=True)
time.sleep(1000)
"""


@pytest.mark.usefixtures("bwrap")
def test_a_killed_worker_takes_its_sandbox_along_and_the_next_one_removes_its_cgroups(storage: Storage) -> None:
    # Given a worker process running a sandboxed child
    marker = f"ytm-orphan-{storage.canary}"
    code = WORKER.format(job=str(storage.job), marker=marker)
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None
        groups = [Path(group) for group in json.loads(worker.stdout.readline())]
        assert _wait_until(lambda: _host_processes_with(marker), 30)

        # When the worker is killed outright (the kernel's out-of-memory killer, say)
        worker.kill()
        worker.wait(10)
    finally:
        worker.kill()
        worker.wait()

    # Then its sandboxed child dies with it, and a worker starting next removes the cgroups it left
    assert _wait_until(lambda: not _host_processes_with(marker), 10), _host_processes_with(marker)
    if not groups:
        pytest.skip("no cgroups here: nothing is left behind")
    assert all(group.exists() for group in groups)
    assert set(groups) <= set(remove_stale_cgroups())
    assert not any(group.exists() for group in groups)


DYING_WORKER = """
import os, signal, sys, threading, time
from pathlib import Path
from yolo_task_manager.workers.sandbox import job_policy, sandbox_available, spawn
policy = job_policy(Path({job!r}), base_env=os.environ, memory_bytes=1 << 30, max_processes=64)
assert sandbox_available()  # probed before the clock starts
threading.Timer({delay}, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
spawn([sys.executable, "-c", "import time; time.sleep(1000)", {marker!r}], policy, sandboxed=True)
time.sleep(1000)
"""


@pytest.mark.usefixtures("bwrap")
def test_a_worker_killed_at_any_moment_of_the_start_leaves_no_tenant_command_running(storage: Storage) -> None:
    # Given workers killed 0 to 16 ms after they begin to spawn a sandboxed child
    marker = f"ytm-orphan-{storage.canary}"
    for i in range(20):
        code = DYING_WORKER.format(job=str(storage.job), marker=marker, delay=i * 0.0008)
        subprocess.run([sys.executable, "-c", code], timeout=60)

    # When the next worker starts and clears what dead workers left
    commands = _wait_until(lambda: not _commands_with(marker), 10)
    remove_stale_cgroups()

    # Then no command ran on (bwrap processes stuck before their set-up may have, until the sweep)
    assert commands, _commands_with(marker)
    assert _wait_until(lambda: not _host_processes_with(marker), 10), _host_processes_with(marker)


def _commands_with(marker: str) -> list[int]:
    """The processes running the sandboxed command itself (not bwrap, whose command line holds it too)."""
    return [pid for pid in _host_processes_with(marker) if _cmdline(pid).startswith(sys.executable.encode())]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


STOPPABLE = """
import os, signal, time
from yolo_task_manager.workers.sandbox import watch_control
def stopped():
    with open("stopped", "w") as f:
        f.write("by request")
    os._exit(3)
def closed():
    with open("stopped", "w") as f:
        f.write("worker gone")
    os._exit(4)
signal.signal(signal.SIGUSR1, lambda *_: stopped())
watch_control({fd}, stopped, closed, silence={silence})
with open("ready", "w"):
    pass
time.sleep(60)
"""


@contextlib.contextmanager
def control_child(storage: Storage, silence: float | None = None) -> Iterator[tuple[SandboxedProcess, int]]:
    """A sandboxed child watching its control pipe (quitting after ``silence`` s without a word): the job and
    the pipe's write end, once the child is ready."""
    control, request = os.pipe()
    job = spawn([sys.executable, "-c", STOPPABLE.format(fd=control, silence=silence)], storage.policy(),
                sandboxed=True, pass_fds=[control])  # fmt: skip
    os.close(control)
    try:
        assert _wait_until((storage.job / "ready").exists, 30, job)
        yield job, request
    finally:
        with contextlib.suppress(OSError):  # closed by the test
            os.close(request)
        job.close()


@pytest.fixture
def stoppable(storage: Storage) -> Iterator[tuple[SandboxedProcess, int]]:
    """A sandboxed child that stops on a request over its control pipe: the job and the pipe's write end."""
    with control_child(storage) as child:
        yield child


@pytest.mark.usefixtures("bwrap")
def test_a_stop_request_over_the_control_pipe_reaches_the_child(
    stoppable: tuple[SandboxedProcess, int], storage: Storage
) -> None:
    # Given a sandboxed child watching its control pipe
    job, request = stoppable

    # When the worker asks it to stop
    request_stop(request)

    # Then the child's own stop code runs and it exits with its code
    assert job.wait(30) == 3
    assert (storage.job / "stopped").read_text() == "by request"


@pytest.mark.usefixtures("bwrap")
def test_a_child_learns_that_its_worker_is_gone_when_the_control_pipe_closes(
    stoppable: tuple[SandboxedProcess, int], storage: Storage
) -> None:
    # Given a sandboxed child watching its control pipe
    job, request = stoppable

    # When the worker's end closes (the worker died, or is done with it)
    os.close(request)

    # Then the child notices and leaves
    assert job.wait(30) == 4
    assert (storage.job / "stopped").read_text() == "worker gone"


@pytest.mark.usefixtures("bwrap")
def test_a_child_that_stops_hearing_from_its_worker_quits_and_keep_alives_hold_it(storage: Storage) -> None:
    # Given a sandboxed child that quits after 2 s without a word from its worker
    with control_child(storage, silence=2.0) as (job, request):
        # When the worker says it is alive ten times a second for 3 s, then falls silent (it froze)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            keep_alive(request)
            time.sleep(0.1)
        alive_while_heard = job.process.poll() is None

        # Then the child lived while it heard from the worker, and left on its own once it did not
        assert alive_while_heard
        assert job.wait(30) == 4
        assert (storage.job / "stopped").read_text() == "worker gone"


@pytest.mark.usefixtures("bwrap")
def test_a_signal_to_the_spawned_pid_does_not_reach_the_child_but_ends_the_sandbox(
    stoppable: tuple[SandboxedProcess, int], storage: Storage
) -> None:
    # Given a sandboxed child with a SIGUSR1 handler (how the supervisor asked for a stop before the control pipe)
    job, _ = stoppable

    # When SIGUSR1 goes to the spawned pid, which is bwrap's
    os.kill(job.pid, signal.SIGUSR1)

    # Then bwrap dies of it and the child is killed without running its handler: use the control pipe
    assert job.wait(30) == -signal.SIGUSR1
    assert not (storage.job / "stopped").exists()


@pytest.mark.usefixtures("bwrap")
def test_torch_and_ultralytics_import_inside(storage: Storage) -> None:
    # Given the offline variables and a config folder in the job's scratch
    code = """
import torch, ultralytics
from ultralytics.utils import SETTINGS_FILE
print(json.dumps({"torch": torch.__version__, "settings": str(SETTINGS_FILE), "threads": torch.get_num_threads()}))
"""
    # When the child imports them
    job, seen, out = run_child(code, storage.policy(memory_bytes=4 << 30, max_processes=512), timeout=120)

    # Then they load, and ultralytics keeps its settings in the job's scratch
    assert job.returncode == 0, out
    assert seen["settings"].startswith(str(storage.job / SCRATCH))
    assert storage.canary not in out


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_a_real_training_runs_in_the_sandbox_and_leaves_the_dataset_untouched(
    storage: Storage, fixtures_dir: Path
) -> None:
    # Given coco8 in alice's datasets and a job as the train task writes it
    dataset = Path(shutil.copytree(fixtures_dir / "datasets" / "coco8", storage.root / "alice" / "datasets" / "coco8"))
    before = sorted((str(p.relative_to(dataset)), p.stat().st_mtime_ns) for p in dataset.rglob("*"))
    run_dir = storage.job
    spec = RunSpec(
        user_id="alice",
        run_name="r1",
        base_model="yolov8n.yaml",
        dataset_dir=str(dataset),
        task="detect",
        epochs=1,
        device="cpu",
        hyp={"imgsz": 64, "batch": 4, "workers": 0, "plots": False},
    )
    job = TrainingJob(
        run_id="r1",
        attempt=1,
        spec=spec,
        model="yolov8n.yaml",
        torch_device="cpu",
        data=write_training_data(inspect_dataset(dataset), run_dir),
        save_dir=str(run_dir / "train"),
    )
    (run_dir / JOB_FILE).write_text(job.to_json())
    read_fd, write_fd = os.pipe()
    control_r, control_w = os.pipe()
    policy = job_policy(run_dir, base_env=os.environ, read_only=(dataset,), hide=(storage.root,),
                        memory_bytes=4 << 30, max_processes=512)  # fmt: skip
    argv = training_child(run_dir / JOB_FILE, write_fd, control_r)

    # When the training child runs in the sandbox, reporting over its pipe
    with open(run_dir / "train.log", "wb") as log:
        child = spawn(
            argv, policy, sandboxed=True, pass_fds=[write_fd, control_r], stdout=log, stderr=subprocess.STDOUT
        )
    os.close(write_fd)
    os.close(control_r)
    with child, os.fdopen(read_fd, "rb") as pipe:
        events = [json.loads(line) for line in pipe if line.strip()]
        code = child.wait(300)
    os.close(control_w)

    # Then epoch 1's metrics and the result arrive, the weights are in the job, and the dataset is as it was
    log_tail = (run_dir / "train.log").read_text()[-3000:]
    assert code == 0, log_tail
    assert [e["epoch"] for e in events if e["type"] == "metrics"] == [1], events
    assert [e for e in events if e["type"] == "result"], events
    assert (run_dir / "train" / "weights" / "last.pt").is_file()
    assert (run_dir / "train" / "weights" / "best.pt").is_file()
    assert sorted((str(p.relative_to(dataset)), p.stat().st_mtime_ns) for p in dataset.rglob("*")) == before
    assert storage.canary not in (run_dir / "train.log").read_text()


def test_without_bubblewrap_on_requires_it_and_auto_goes_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a machine where bwrap is not on PATH
    monkeypatch.setenv("PATH", str(tmp_path))

    # When the worker decides whether to sandbox
    # Then "on" refuses to run tenant code unsandboxed, saying what to do; "auto" and "off" go without
    assert not sandbox_available()
    with pytest.raises(SandboxUnavailable, match="apt install bubblewrap.*YTM_SANDBOX=off"):
        require_sandbox("on")
    assert require_sandbox("auto") is False
    assert require_sandbox("off") is False
    with pytest.raises(InvalidInput, match="'sometimes'"):
        require_sandbox("sometimes")


def test_a_worker_where_no_sandbox_can_be_built_refuses_to_start_unless_told_off(tmp_path: Path) -> None:
    # Given a machine where bwrap is not on PATH, and no YTM_SANDBOX
    env = {k: v for k, v in os.environ.items() if not k.startswith("YTM_")}
    env.update(PATH=str(tmp_path), YTM_REDIS_URL="redis://127.0.0.1:9/0", YTM_STORAGE_ROOT=str(tmp_path / "root"))
    argv = [sys.executable, "-m", "yolo_task_manager.cli", "worker", "--device", "cpu"]

    # When a worker is started there
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    # Then it refuses, saying how to get the sandbox or how to accept the risk
    assert out.returncode != 0
    assert "apt install bubblewrap" in out.stderr and "YTM_SANDBOX=off" in out.stderr


def test_child_env_keeps_the_allowlist_and_drops_settings_and_credentials() -> None:
    # Given a worker's environment with settings, credentials and the variables a training needs
    base = {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0", "YTM_REDIS_URL": "redis://:pw@r/0",
        "REDIS_URL": "redis://:pw@r/0", "AWS_ACCESS_KEY_ID": "A", "GITHUB_TOKEN": "t", "HOME": "/root",
        "LD_PRELOAD": "/tmp/evil.so", "PYTHONSTARTUP": "/tmp/evil.py", "OPENBLAS_API_KEY": "x",
    }  # fmt: skip

    # When the child's environment is built
    env = child_env(base, {"HOME": "/job/.scratch/home", "YOLO_OFFLINE": "1"})

    # Then only the allowlisted variables and the extras are there
    assert env == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0", "HOME": "/job/.scratch/home", "YOLO_OFFLINE": "1",
    }  # fmt: skip
    for name in ("YTM_STORAGE_ROOT", "MY_TOKEN", "DB_PASSWORD", "aws_secret"):
        with pytest.raises(InvalidInput):
            child_env({}, {name: "x"})
