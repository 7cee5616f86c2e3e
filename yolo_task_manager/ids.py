"""The one validator for user ids, model names and run names, and the one containment rule for paths."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from yolo_task_manager.errors import InvalidInput

__all__ = [
    "MAX_ID_LENGTH",
    "RESERVED_USER_IDS",
    "Area",
    "Entry",
    "check_access",
    "resolve_inside",
    "validate_id",
]

MAX_ID_LENGTH = 64
_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*")
RESERVED_USER_IDS = frozenset({"_system", "pretrained", "runs"})
"""Folders the system owns (or owned) directly under the storage root: never a user's folder. Compared
case-insensitively, as a case-insensitive volume would."""
_USER_KINDS = ("user_id", "user")
_MAX_LINKS = 40  # what Linux allows in one path lookup (ELOOP)


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is safe to use in a path, a Redis key and a query.

    A user id (``what`` is "user_id" or "user") may also not be one of ``RESERVED_USER_IDS``.

    Raises:
        InvalidInput: it is not a string of letters, digits, ``._-`` without a leading dot,
            1 to MAX_ID_LENGTH characters long, or it names a folder of the system.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if not _ID.fullmatch(value):
        raise InvalidInput(
            f"{what} {value!r} may hold only letters, digits, '.', '_' and '-', and may not start with '.'"
        )
    if what in _USER_KINDS and value.lower() in RESERVED_USER_IDS:
        raise InvalidInput(
            f"{what} {value!r} is reserved for the system's own folders ({', '.join(sorted(RESERVED_USER_IDS))}): "
            "choose another user id"
        )
    return value


@dataclass(frozen=True, slots=True)
class Entry:
    """What a path leads to inside an ``Area``."""

    real: str | None
    """The path with every link resolved, inside the area; None when nothing is there or a link leads out."""
    mode: int = 0
    """``st_mode`` of what is there (never of a link), 0 when nothing is."""
    blocked: bool = False
    """A link on the way leads out of the area, or links loop: the area says nothing of what lies there."""

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


_ABSENT = Entry(real=None)
_BLOCKED = Entry(real=None, blocked=True)


class Area:
    """A folder that paths must stay inside: links are followed only while they stay inside it.

    It resolves a path one component at a time, like the kernel, but never looks at anything outside the
    folder: a link whose target leaves it is "blocked" whether or not its target exists, so what lies
    elsewhere (another user's files) cannot change any answer. Folders already resolved are remembered,
    so resolving every file of a dataset costs about one ``lstat`` each.
    """

    def __init__(self, folder: str | Path) -> None:
        given = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        try:
            self.real = os.path.realpath(given, strict=True)
        except (OSError, ValueError):
            self.real = given  # a missing area holds nothing; every lookup below reports absent
            self._missing = True
        else:
            self._missing = not os.path.isdir(self.real)
        self.spellings = tuple(dict.fromkeys((self.real, given)))
        self._dirs: dict[str, Entry] = {}

    def __repr__(self) -> str:
        return f"Area({self.real!r})"

    def contains(self, real: str) -> bool:
        """Whether an already resolved path lies in the area (the area itself included)."""
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)

    def resolve(self, path: str | Path) -> Entry:
        """What ``path`` (absolute, or relative to the area) leads to, never following a link out of the area."""
        if self._missing:
            return _BLOCKED
        path = os.fspath(path)
        if "\0" in path:  # no file has such a name; os calls would raise ValueError
            return _ABSENT
        if not os.path.isabs(path):
            path = os.path.join(self.real, path)
        rel = self._relative(path)
        if rel is None:
            return _BLOCKED
        head, _, name = rel.rpartition(os.sep)
        if name in ("", ".", "..") or not head:
            return self._walk(self.real, rel.split(os.sep) if rel else [])
        parent = self._dirs.get(head)
        if parent is None:
            parent = self._dirs[head] = self._walk(self.real, head.split(os.sep))
        if parent.real is None:
            return parent
        if not parent.is_dir:
            return _ABSENT
        return self._walk(parent.real, [name])

    def _relative(self, path: str) -> str | None:
        for spelling in self.spellings:
            if path == spelling:
                return ""
            prefix = spelling.rstrip(os.sep) + os.sep
            if path.startswith(prefix):
                return path[len(prefix) :]
        return None

    def _walk(self, start: str, parts: list[str]) -> Entry:
        current, pending, links = start, list(reversed(parts)), 0
        mode = stat.S_IFDIR
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if current == self.real:
                    return _BLOCKED
                current = os.path.dirname(current)
                continue
            candidate = os.path.join(current, part)
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                return _ABSENT
            except OSError:  # permission denied, name too long: nothing this user can use
                return _ABSENT
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    return _BLOCKED
                try:
                    target = os.readlink(candidate)
                except OSError:
                    return _ABSENT
                if os.path.isabs(target):  # compared as spelled: "/area/../area/x" leaves it, so is blocked
                    rel = self._relative(target)
                    if rel is None:
                        return _BLOCKED
                    current, target = self.real, rel
                pending.extend(reversed(target.split(os.sep)))
                continue
            if pending and not stat.S_ISDIR(st.st_mode):
                return _ABSENT
            current, mode = candidate, st.st_mode
        return Entry(real=current, mode=mode)


def resolve_inside(path: str | Path, area: str | Path | Area) -> Path | None:
    """The real path of ``path`` if something is there and it lies inside ``area``, else None.

    This is the containment rule everything else uses: a missing path and a path that leads out of the area
    (``..``, an absolute path elsewhere, a link to another user's files) give the same answer, so callers
    cannot help but refuse them alike.
    """
    entry = (area if isinstance(area, Area) else Area(area)).resolve(path)
    return Path(entry.real) if entry.real is not None else None


def check_access(path: str | Path, root: Path, user_id: str, *, also: tuple[Path, ...] = ()) -> Path:
    """Resolve ``path``; it must lie in ``user_id``'s own folder of the storage ``root`` or in one of ``also``
    (the operator's folders: pretrained weights, shared datasets), so no user reaches another's data.

    Raises:
        InvalidInput: the path is anywhere else; the message is the same whether it exists or not.
    """
    if "\0" in os.fspath(path):
        raise InvalidInput(f"{os.fspath(path)!r} is not a path: it holds a NUL character")
    resolved = Path(os.path.realpath(os.path.expanduser(os.fspath(path))))
    root = Path(os.path.realpath(root))
    for allowed in (root / validate_id(user_id, "user_id"), *also):
        if resolved.is_relative_to(os.path.realpath(allowed)):
            return resolved
    raise InvalidInput(
        f"{path} is not in the folder of user {user_id!r} ({root / user_id}) nor in a shared data folder: "
        "use your own files"
    )
