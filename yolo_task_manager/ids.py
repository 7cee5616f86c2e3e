"""The one validator for user ids, model names and run names."""

from __future__ import annotations

import re
from pathlib import Path

from yolo_task_manager.errors import InvalidInput

__all__ = ["MAX_ID_LENGTH", "check_access", "validate_id"]

MAX_ID_LENGTH = 64
_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*")


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is safe to use in a path, a Redis key and a query.

    Raises:
        InvalidInput: it is not a string of letters, digits, ``._-`` without a leading dot,
            1 to MAX_ID_LENGTH characters long.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if not _ID.fullmatch(value):
        raise InvalidInput(
            f"{what} {value!r} may hold only letters, digits, '.', '_' and '-', and may not start with '.'"
        )
    return value


def check_access(path: str | Path, root: Path, user_id: str, *, also: tuple[Path, ...] = ()) -> Path:
    """Resolve ``path``; if it lies under the storage ``root``, it must be in ``user_id``'s own folder
    (or one of ``also``), so no user reaches another user's data through a path.

    Raises:
        InvalidInput: the path is in another part of the storage root.
    """
    resolved = Path(path).expanduser().resolve()
    root = root.resolve()
    if not resolved.is_relative_to(root):
        return resolved
    for allowed in (root / user_id, *also):
        if resolved.is_relative_to(allowed.resolve()):
            return resolved
    raise InvalidInput(
        f"{path} is inside the storage root but not in the folder of user {user_id!r} ({root / user_id}): "
        "use your own files, or files outside the storage root"
    )
