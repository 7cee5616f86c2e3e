"""Files written so that a crash or a full disk never leaves a truncated one where a reader looks.

Each write goes to a temp file in the target's folder, is fsync'd, renamed over the target, and the folder
is fsync'd: a reader (a resume, a model load) sees the old file or the whole new one. A full disk (ENOSPC,
EDQUOT) raises ``StorageError`` naming the file and the volume it is on. A shared value module: stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from yolo_task_manager.errors import StorageError

__all__ = [
    "DISK_FULL", "copy_file", "disk_full_reason", "fsync_dir", "mount_point", "replace", "temp_beside",
    "write_bytes", "write_text", "writing",
]  # fmt: skip

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The errnos of a volume (or a quota on it) with no room left."""


def mount_point(path: Path) -> Path:
    """The mount point of the volume that holds ``path`` (or would hold it, for a file not yet made)."""
    current = Path(os.path.abspath(path))
    while not current.exists():
        current = current.parent
    while not os.path.ismount(current):
        current = current.parent
    return current


def disk_full_reason(path: Path, exc: OSError) -> str:
    """What a person reads when writing ``path`` failed for want of space, and what to do."""
    volume = mount_point(path)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(volume).free
        return (f"cannot write {path}: {exc.strerror}: the volume mounted at {volume} is full ({free} bytes free); "
                "free space there, then resume the run")  # fmt: skip
    return f"cannot write {path}: {exc.strerror}: the volume mounted at {volume} is full; free space there"


def _failure(path: Path, exc: OSError) -> StorageError:
    if exc.errno in DISK_FULL:
        return StorageError(disk_full_reason(path, exc))
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


def temp_beside(path: Path) -> Path:
    """A fresh name in ``path``'s folder (the same volume, so that a rename is atomic), hidden from listings."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(tmp: Path, path: Path) -> None:
    """Rename the finished (fsync'd) ``tmp`` over ``path`` and make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only once the block finishes; on any error ``path`` is untouched.

    Raises:
        StorageError: the write failed; for a full disk, the message names the volume.
    """
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except OSError as exc:
        raise _failure(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` as ``path`` atomically and durably."""
    with writing(path) as f:
        f.write(data)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) as ``path`` atomically and durably."""
    write_bytes(path, text.encode("utf-8"))


def copy_file(src: Path, path: Path) -> None:
    """Copy ``src`` as ``path`` atomically and durably."""
    try:
        source = open(src, "rb")  # noqa: SIM115 - its errors must be told apart from the destination's
    except OSError as exc:
        raise StorageError(f"cannot read {src}: {exc.strerror or exc}") from exc
    with source, writing(path) as f:
        shutil.copyfileobj(source, f, 1 << 20)
