"""An attempt's own folder, seeded from the run's promoted state and promoted back only under its fence.

A run's published state is ``{run_dir}/train/`` (``weights/last.pt``, ``weights/best.pt``, ``epochs.jsonl``,
``results.csv``): what a resume starts from and what the model is published from. Attempt ``n`` trains in
``{run_dir}/attempts/{n}/train/``, seeded from it when it starts. At each saved checkpoint, and at the end,
the worker stages the attempt's files beside the published ones, checks in Redis that the attempt still holds
the lease (``Lease.holds``), and renames them into place. A worker that froze past its lease finds the check
failing and promotes nothing: the published state is only ever written by the attempt that owns the run.

The one gap left: a worker frozen between the check and its renames (a few syscalls), for longer than the
lease's remaining life (the supervisor requires a quarter of the TTL left, ``min_left``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from yolo_task_manager import durable
from yolo_task_manager.errors import StorageError

__all__ = ["ATTEMPTS", "LINKED", "PUBLISHED", "AttemptFolder"]

log = logging.getLogger(__name__)

ATTEMPTS = "attempts"
PUBLISHED = "train"
LINKED = ("weights/best.pt", "weights/last.pt")
"""Written by the child only by rename (``train_child``), so a hard link is a stable snapshot."""
_COPIED = ("epochs.jsonl", "results.csv")
"""Appended to in place by the child (and ultralytics): copied, never linked."""


class AttemptFolder:
    """Attempt ``attempt``'s folder of the run in ``run_dir``."""

    def __init__(self, run_dir: Path, attempt: int) -> None:
        self.run_dir = run_dir
        self.attempt = attempt
        self.path = run_dir / ATTEMPTS / str(attempt)
        self.save_dir = self.path / PUBLISHED
        """Where the child's ultralytics training writes."""
        self.published = run_dir / PUBLISHED

    def seed(self) -> None:
        """Make the folder afresh from the run's promoted state, and remove older attempts' folders.

        Raises:
            StorageError: the folder cannot be made (a full disk names its volume).
        """
        self.remove_older()
        shutil.rmtree(self.path, ignore_errors=True)  # a crashed earlier try of this same attempt
        try:
            (self.save_dir / "weights").mkdir(parents=True)
            for rel in LINKED:
                if (self.published / rel).is_file():
                    os.link(self.published / rel, self.save_dir / rel)
            for rel in _COPIED:
                if (self.published / rel).is_file():
                    durable.copy_file(self.published / rel, self.save_dir / rel)
        except OSError as exc:
            if exc.errno in durable.DISK_FULL:
                raise StorageError(durable.disk_full_reason(self.save_dir, exc)) from exc
            raise StorageError(f"cannot prepare {self.path}: {exc.strerror or exc}") from exc

    def remove_older(self) -> None:
        """Remove the folders of earlier attempts: this one has taken the run, their children are gone."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.run_dir / ATTEMPTS):
                if entry.name.isdigit() and int(entry.name) < self.attempt:
                    shutil.rmtree(entry.path, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def promote(self, holds: Callable[[], float], *, min_left: float, extra: tuple[str, ...] = ()) -> bool:
        """Publish the attempt's files, each by one atomic rename, if ``holds()`` (the lease's remaining
        life, checked in Redis) is above ``min_left`` once they are staged; False when it is not.

        ``extra``: more files relative to the save dir (plots, at the end). ``last.pt`` goes last: a crash
        mid-way leaves an older checkpoint beside newer epoch logs, which a resume reads correctly.

        Raises:
            StorageError: staging failed (a full disk names its volume); nothing was published.
            redis.exceptions.RedisError: the check could not be made; nothing was published.
        """
        staged: list[tuple[Path, Path]] = []
        try:
            for rel in (*_COPIED, *extra, *LINKED):
                src = self.save_dir / rel
                if not src.is_file():
                    continue
                dest = self.published / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = durable.temp_beside(dest)
                if rel in LINKED:
                    os.link(src, tmp)
                else:
                    durable.copy_file(src, tmp)
                staged.append((tmp, dest))
            left = holds()
            if left <= min_left:
                log.warning("attempt %s of %s: fenced off (its lease is %s): promoted nothing", self.attempt,
                            self.run_dir.name, f"{left:.1f}s from expiry" if left else "another's")  # fmt: skip
                return False
            for tmp, dest in staged:
                os.replace(tmp, dest)
            for folder in {dest.parent for _, dest in staged}:
                durable.fsync_dir(folder)
            return True
        except OSError as exc:
            if exc.errno in durable.DISK_FULL:
                raise StorageError(durable.disk_full_reason(self.published, exc)) from exc
            raise StorageError(f"cannot promote {self.save_dir} to {self.published}: {exc.strerror or exc}") from exc
        finally:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    tmp.unlink()
