"""Files and folders the system creates are its owner's alone (0600/0700), or its group's with YTM_FILE_MODE=0660.

Processes we own (the CLI, workers) set their umask from the settings; inside a caller's process the library
leaves the umask alone and gives the few files it creates their mode explicitly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from yolo_task_manager import InvalidInput, Settings
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.registry import Registry
from yolo_task_manager.values import RunSpec


@pytest.fixture
def permissive_umask() -> Iterator[int]:
    """A umask that would leave new files readable by everyone, as a careless host process might have."""
    old = os.umask(0o002)
    try:
        yield 0o002
    finally:
        os.umask(old)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*")) if not p.is_symlink()}


@pytest.mark.parametrize(("raw", "file_mode", "dir_mode"), [("0600", 0o600, 0o700), ("0660", 0o660, 0o770),
                                                            ("640", 0o640, 0o750)])  # fmt: skip
def test_ytm_file_mode_is_octal_and_gives_folders_the_matching_x_bits(raw: str, file_mode: int, dir_mode: int):
    # Given YTM_FILE_MODE as an operator writes it
    # When settings are read from the environment, and handed on to a child
    settings = Settings.from_env({"YTM_FILE_MODE": raw})

    # Then files get that mode, folders the same with x where r is, and a child process gets the same
    assert (settings.file_mode, settings.dir_mode, settings.umask) == (file_mode, dir_mode, 0o777 & ~dir_mode)
    assert Settings.from_env(settings.to_env()).file_mode == file_mode
    assert Settings().file_mode == 0o600


@pytest.mark.parametrize("raw", ["0777", "0644x", "0400", "rw-rw----", "01600"])
def test_a_file_mode_that_is_not_a_safe_octal_mode_is_refused(raw: str) -> None:
    # Given an executable, unreadable-by-owner, setuid or non-octal mode
    # When settings are read
    # Then InvalidInput names the variable or the field
    with pytest.raises(InvalidInput, match="file_mode|YTM_FILE_MODE"):
        Settings.from_env({"YTM_FILE_MODE": raw})


def test_the_embedded_redis_folder_and_files_are_private_whatever_the_umask(
    tmp_path: Path, permissive_umask: int
) -> None:
    # Given a host process whose umask lets everyone read new files, and no state folder yet
    state = tmp_path / "root" / ".ytm"

    # When the embedded Redis starts there (and writes its append-only file)
    server = EmbeddedRedis(state / "redis").start()
    try:
        redis.Redis.from_url(server.url).set("k", "v")
        found = modes(tmp_path)
    finally:
        server.stop()

    # Then every folder it made is 0700 and every file 0600, and the host's umask is what it was
    assert current_umask() == permissive_umask
    assert {name: mode for name, mode in found.items() if (tmp_path / name).is_dir()} == {
        "root": 0o700, "root/.ytm": 0o700, "root/.ytm/redis": 0o700,
    }  # fmt: skip
    files = {name: mode for name, mode in found.items() if not (tmp_path / name).is_dir()}
    assert "root/.ytm/redis/redis.conf" in files and "root/.ytm/redis/redis.log" in files
    assert any("appendonly" in name for name in files)
    assert set(files.values()) == {0o600}, files


def test_a_new_sqlite_registry_is_private_whatever_the_umask(tmp_path: Path, permissive_umask: int) -> None:
    # Given a host process whose umask lets everyone read new files
    # When a registry is created on a new SQLite file and written to
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml", dataset_dir="/d",
                              task="detect",
                            epochs=1, device="cpu", hyp={}, max_duration=None))  # fmt: skip
        found = modes(tmp_path)
    finally:
        registry.close()

    # Then the database and its write-ahead log are the owner's alone
    assert found["registry.db"] == 0o600
    assert {name: mode for name, mode in found.items() if name.startswith("registry.db-")} == {
        "registry.db-wal": 0o600, "registry.db-shm": 0o600,
    }  # fmt: skip


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis") / "redis").start()
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("file_mode", [0o600, 0o660])
def test_a_worker_creates_its_files_and_folders_with_file_mode(
    redis_server: EmbeddedRedis, tmp_path: Path, file_mode: int
) -> None:
    # Given settings with YTM_FILE_MODE, and a storage root that does not exist yet
    tag = uuid.uuid4().hex[:8]
    settings = Settings(storage_root=tmp_path / "root", redis_url=redis_server.url, key_prefix=f"m{tag}",
                        node=f"n{tag}", file_mode=file_mode, tick_interval=0.5)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("YTM_")}
    client = redis.Redis.from_url(redis_server.url)
    presence = WorkerPresence(client, Keys(settings.key_prefix))
    queue = queue_for_device("cpu", settings.node)

    # When `ytm worker` (started from a shell whose umask is 022) comes up and registers
    worker = subprocess.Popen([sys.executable, "-m", "yolo_task_manager.cli", "worker", "--device", "cpu"],
                              env={**env, **settings.to_env()}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              umask=0o022)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while presence.last_beat(queue) is None:
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker did not register in 120 s"
            time.sleep(0.1)
        found = modes(settings.storage_root)
    finally:
        worker.terminate()
        worker.wait(60)
        client.close()

    # Then it made the root, its state folder, the registry and its scratch space, each with file_mode (folders
    # with dir_mode), and nothing more open than that
    scratch = f".ytm/workers/{queue_for_device('cpu', settings.node)}"
    assert settings.storage_root.stat().st_mode & 0o777 == settings.dir_mode
    assert {".ytm", ".ytm/registry.db", scratch, f"{scratch}/config/Ultralytics"} <= set(found)
    for name, mode in found.items():
        wanted = settings.dir_mode if (settings.storage_root / name).is_dir() else settings.file_mode
        assert mode & ~wanted == 0, f"{name} is {mode:o}, more open than {wanted:o}"
        if name.startswith(scratch):
            assert mode == wanted, f"{name} is {mode:o}, not {wanted:o}"
