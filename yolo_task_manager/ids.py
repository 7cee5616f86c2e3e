"""The one validator for user ids, model names and run names."""

from __future__ import annotations

import re

from yolo_task_manager.errors import InvalidInput

__all__ = ["MAX_ID_LENGTH", "validate_id"]

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
