"""The producer's argument checks: what no lower layer could turn into a clear, typed message."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis

from yolo_task_manager.api_client.inference import check_path_text
from yolo_task_manager.api_client.subscriber import CALLBACK_NAMES
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.redact import mask_url, redact, shown
from yolo_task_manager.values import RunStatus

__all__ = [
    "area_of",
    "check_device",
    "check_duration",
    "check_json",
    "check_name",
    "check_path",
    "check_redis_url",
    "check_seconds",
    "check_status",
    "check_timeout",
    "validate_callbacks",
]

Callbacks = Mapping[str, Callable[..., Any]]


def validate_callbacks(callbacks: Callbacks | None) -> dict[str, Callable[..., Any]]:
    if callbacks is None:
        return {}
    if not isinstance(callbacks, Mapping):
        raise InvalidInput(f"callbacks must be a dict like {{'on_metrics': fn}}, got {type(callbacks).__name__}")
    unknown = set(callbacks) - CALLBACK_NAMES
    if unknown:
        raise InvalidInput(f"unknown callbacks {sorted(unknown)}: use {sorted(CALLBACK_NAMES)}")
    for name, fn in callbacks.items():
        if not callable(fn):
            raise InvalidInput(f"callback {name!r} is not callable")
    return dict(callbacks)


_MAX_SECONDS = 10 * 365 * 86400.0


def check_redis_url(url: object) -> None:
    if url is None:
        return
    try:
        if not isinstance(url, str):
            raise ValueError(f"a {type(url).__name__}, not a string")
        redis.Redis.from_url(url).close()  # parses; connects only on the first command
    except ValueError as exc:
        raise InvalidInput(
            f"redis_url {mask_url(url)} is not a Redis URL ({redact(str(exc))}): use "
            "redis://[:password@]host:port/db, rediss://... or unix:///path/to/redis.sock"
        ) from None


def check_path(value: object, what: str) -> str:
    """A path given as str or os.PathLike, without what no file name can hold."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise InvalidInput(f"{what} must be a path (str), got {shown(value)}")
    check_path_text(path, what)
    try:
        os.stat(path)
    except OSError as exc:  # pathlib raises on these instead of answering False (a loop: RuntimeError, < 3.13)
        if exc.errno == errno.ELOOP:
            raise InvalidInput(f"{what} {shown(path)} is a loop of symbolic links") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidInput(f"{what} has a part longer than any file name (255 bytes)") from None
    return path


def check_name(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {shown(value)}")
    return value


def check_device(device: object) -> str | None:
    if device is None or (isinstance(device, str) and len(device) <= 64):
        return device
    if isinstance(device, int) and not isinstance(device, bool) and 0 <= device < 1024:
        return str(device)
    raise InvalidInput(f"device must be 'cpu', 'cuda:N', 'cuda', 'auto' or a GPU index, got {shown(device)}")


def check_timeout(value: object, what: str) -> float | None:
    return None if value is None else check_seconds(value, what)


def check_seconds(value: object, what: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= _MAX_SECONDS:
        raise InvalidInput(f"{what} must be a number of seconds from {low:g} to {_MAX_SECONDS:g}, got {shown(value)}")
    return float(value)


def check_duration(value: object) -> str | float | None:
    """Numbers must fit a float (strings and the rest are parse_duration's to judge)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 < value <= _MAX_SECONDS:  # also false for nan
            raise InvalidInput(f"max_duration must be from 0 to {_MAX_SECONDS:g} seconds, got {shown(value)}")
        return float(value)
    return value  # type: ignore[return-value]


def check_json(values: Mapping[str, Any], what: str) -> None:
    """Values the registry can store and a worker can read back: JSON, without NaN or infinity."""
    try:
        json.dumps(values, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} must be numbers, strings, booleans, lists or None ({exc})") from None


def check_status(status: object) -> RunStatus | None:
    if status is None or isinstance(status, RunStatus):
        return status
    try:
        return RunStatus(status)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"status {shown(status)} is not a run status: use one of {[s.value for s in RunStatus]} or RunStatus"
        ) from None


def area_of(path: Path, area: Path, shared: tuple[Path, ...]) -> Path:
    """The folder a dataset must stay inside: the user's own, or the shared folder it lies in."""
    return next((s for s in shared if path.is_relative_to(os.path.realpath(s))), area)
