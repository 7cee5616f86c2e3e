"""The lease as a fencing token, and attempt folders that promote only under it (fakeredis runs the Lua)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import fakeredis
import pytest
import redis

from yolo_task_manager import durable
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.lease import Lease
from yolo_task_manager.errors import StorageError
from yolo_task_manager.workers.attempts import AttemptFolder

KEYS = Keys("test")
RUN = "r" * 32


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def _lease(client: fakeredis.FakeRedis, attempt: int, ttl: float = 30.0) -> Lease:
    return Lease(client, KEYS, RUN, ttl, attempt=attempt)


def _saved(folder: AttemptFolder, epoch: int) -> None:
    """What a child leaves after saving epoch ``epoch``: checkpoints written by rename, logs appended."""
    (folder.save_dir / "weights").mkdir(parents=True, exist_ok=True)
    durable.write_bytes(folder.save_dir / "weights" / "last.pt", f"last {epoch}".encode())
    durable.write_bytes(folder.save_dir / "weights" / "best.pt", f"best {epoch}".encode())
    with open(folder.save_dir / "epochs.jsonl", "a") as log:
        log.write(f'{{"epoch": {epoch}}}\n')


# ---------------------------------------------------------------------------- the lease's fence


def test_a_lease_holds_while_ours_and_not_once_another_attempt_took_the_run(client) -> None:
    # Given attempt 1 holding the lease
    first = _lease(client, 1)
    assert first.acquire() and first.holds() > 29

    # When its lease expires (the worker froze) and attempt 2 takes the run
    client.delete(KEYS.lease(RUN))
    second = _lease(client, 2)
    assert second.acquire()

    # Then attempt 1 holds nothing, cannot renew, and can never take the lease back, even once it is free
    assert first.holds() == 0 and not first.renew()
    assert second.holds() > 0
    second.release()
    assert not first.acquire()
    assert first.heartbeat(lambda: True) == "lease lost: another attempt owns this run"


def test_releasing_a_lease_never_releases_another_attempt_s(client) -> None:
    # Given attempt 2 holding the run after attempt 1's lease expired
    first, second = _lease(client, 1), _lease(client, 2)
    assert first.acquire()
    client.delete(KEYS.lease(RUN))
    assert second.acquire()

    # When the thawed attempt 1 releases what it believes is its lease
    first.release()

    # Then attempt 2 still holds it
    assert second.holds() > 0


def test_a_heartbeat_without_redis_is_survived_only_within_the_lease_s_life(client) -> None:
    # Given a held lease of 10 s, on a clock the test moves, and Redis gone
    now = [0.0]
    lease = Lease(client, KEYS, RUN, 10.0, attempt=1, clock=lambda: now[0])
    assert lease.acquire()

    def unreachable(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("gone")

    client.eval = unreachable  # type: ignore[method-assign]

    # When heartbeats fail for a while, then for the lease's whole life
    now[0] = 9.0
    early = lease.heartbeat(lambda: True)
    now[0] = 10.0
    late = lease.heartbeat(lambda: True)

    # Then the worker keeps the run only while the lease may still live, never twice its TTL
    assert early is None
    assert late is not None and "past the lease's life" in late


# ---------------------------------------------------------------------------- attempt folders


def test_an_attempt_promotes_its_checkpoint_while_its_lease_holds(client, tmp_path: Path) -> None:
    # Given attempt 1 holding the lease, with a saved checkpoint in its own folder
    lease = _lease(client, 1)
    assert lease.acquire()
    folder = AttemptFolder(tmp_path, 1)
    folder.seed()
    _saved(folder, 1)

    # When it promotes
    promoted = folder.promote(lease.holds, min_left=1.0)

    # Then the run's published place has its files
    assert promoted
    assert (tmp_path / "train" / "weights" / "last.pt").read_bytes() == b"last 1"
    assert (tmp_path / "train" / "epochs.jsonl").read_text() == '{"epoch": 1}\n'
    assert not [p for p in (tmp_path / "train").rglob(".*")], "no temp file is left behind"


def test_a_stale_attempt_promotes_nothing_and_the_published_state_stays_the_new_owner_s(client, tmp_path: Path) -> None:
    # Given attempt 1 that promoted epoch 1, then froze past its lease while attempt 2 took the run over,
    # seeded from the promoted state, and promoted epoch 2
    first = _lease(client, 1)
    assert first.acquire()
    old = AttemptFolder(tmp_path, 1)
    old.seed()
    _saved(old, 1)
    assert old.promote(first.holds, min_left=1.0)
    client.delete(KEYS.lease(RUN))
    second = _lease(client, 2)
    assert second.acquire()
    new = AttemptFolder(tmp_path, 2)
    new.seed()
    assert (new.save_dir / "weights" / "last.pt").read_bytes() == b"last 1"  # resumes from the promoted one
    assert (new.save_dir / "epochs.jsonl").read_text() == '{"epoch": 1}\n'
    _saved(new, 2)
    assert new.promote(second.holds, min_left=1.0)

    # When the thawed attempt 1 saves another checkpoint and tries to promote it
    assert not old.path.exists()  # attempt 2 removed it when it took the run
    _saved(old, 9)
    refused = old.promote(first.holds, min_left=1.0)

    # Then the script refuses it, and what is published is attempt 2's
    assert not refused
    assert (tmp_path / "train" / "weights" / "last.pt").read_bytes() == b"last 2"
    assert (tmp_path / "train" / "epochs.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert not [p for p in (tmp_path / "train").rglob(".*")]


def test_a_new_attempt_removes_older_attempt_folders_and_never_shares_an_appended_file(tmp_path: Path) -> None:
    # Given a promoted run and attempt 1's folder left behind
    AttemptFolder(tmp_path, 1).seed()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "epochs.jsonl").write_text("1\n")

    # When attempt 3 starts
    folder = AttemptFolder(tmp_path, 3)
    folder.seed()
    with open(folder.save_dir / "epochs.jsonl", "a") as log:
        log.write("2\n")

    # Then attempt 1's folder is gone, and its appends never reach the published log
    assert sorted(os.listdir(tmp_path / "attempts")) == ["3"]
    assert (tmp_path / "train" / "epochs.jsonl").read_text() == "1\n"


def test_a_promotion_whose_lease_is_about_to_expire_is_refused(client, tmp_path: Path) -> None:
    # Given an attempt whose lease has less than the required margin left
    lease = _lease(client, 1, ttl=0.5)
    assert lease.acquire()
    folder = AttemptFolder(tmp_path, 1)
    folder.seed()
    _saved(folder, 1)

    # When it promotes, requiring 5 s of lease left
    # Then nothing is published
    assert not folder.promote(lease.holds, min_left=5.0)
    assert not (tmp_path / "train" / "weights" / "last.pt").exists()


# ---------------------------------------------------------------------------- atomic writes


def test_a_failed_write_leaves_the_old_file_whole_and_no_temp_file(tmp_path: Path) -> None:
    # Given a file, and a write that fails half-way
    target = tmp_path / "last.pt"
    durable.write_bytes(target, b"old checkpoint")

    # When the writer fails mid-write
    with pytest.raises(RuntimeError), durable.writing(target) as f:
        f.write(b"half of a new one")
        raise RuntimeError("killed mid-write")

    # Then the old file is intact and nothing else is left
    assert target.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_full_disk_names_the_file_and_the_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a disk that is full when the data is synced
    target = tmp_path / "best.pt"
    durable.write_bytes(target, b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)

    # When a new version is written
    with pytest.raises(StorageError) as caught:
        durable.write_bytes(target, b"new")

    # Then the error says which file and which volume, and the old file is whole
    message = str(caught.value)
    assert str(target) in message and f"mounted at {durable.mount_point(tmp_path)}" in message
    assert "No space left on device" in message
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["best.pt"]


def test_the_mount_point_of_a_path_not_yet_made_is_its_volume_s() -> None:
    assert durable.mount_point(Path("/proc/self/nowhere/x")) == Path("/proc")
