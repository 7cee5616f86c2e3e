"""Listing a dataset's folders as ultralytics will, following links only while they stay in the area."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from yolo_task_manager.datasets.files import shown
from yolo_task_manager.ids import Area

__all__ = ["IMAGE_SUFFIXES", "Findings", "Listed", "Listing", "is_image", "list_files"]

IMAGE_SUFFIXES = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"})
_MAX_SHOWN = 5


def is_image(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_SUFFIXES


class Findings:
    """Problems of one kind: the first few examples and how many there are."""

    def __init__(self, what: str, fix: str) -> None:
        self.what, self.fix = what, fix
        self.examples: list[str] = []
        self.count = 0

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < _MAX_SHOWN:
            self.examples.append(example)

    def message(self) -> str | None:
        if not self.count:
            return None
        more = f"; and {self.count - _MAX_SHOWN} more" if self.count > _MAX_SHOWN else ""
        return f"{self.what} ({self.count}): {'; '.join(self.examples)}{more}: {self.fix}"


class Listing:
    """The links and odd files met while listing one dataset's folders."""

    def __init__(self, area: Area, root: Path) -> None:
        self.area, self.root = area, root
        self.out = Findings(
            f"links that lead out of {shown(area.real)} (or loop)",
            "point them at files inside it, or copy the files in",
        )
        self.dangling = Findings("links to files that do not exist", "fix or remove these links")
        self.irregular = Findings(
            "entries that are not regular files (FIFOs, sockets or devices)", "replace them with plain files"
        )

    def findings(self) -> list[Findings]:
        return [self.out, self.dangling, self.irregular]


@dataclass
class Listed:
    """What one listing found: files as (the path ultralytics will see, the real file), and at depth 1 the
    folders directly inside."""

    files: list[tuple[str, str]] = field(default_factory=list)
    dir_paths: list[tuple[str, str]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def dirs(self) -> list[str]:
        return [Path(lexical).name for lexical, _ in self.dir_paths]


def list_files(listing: Listing, lexical: str, real: str, *, skip_hidden: bool, depth: int | None = None) -> Listed:
    """The files under the real folder ``real``, named as under ``lexical``, never reading a folder twice.

    With ``skip_hidden`` dot names are left out, as ultralytics' ``glob('**/*.*')`` leaves them out; with
    ``depth=1`` only the folder itself is read, and its sub-folders are returned in ``dir_paths``.
    """
    result = Listed()
    seen: set[str] = set()
    stack = [(lexical, real, 1)]
    while stack:
        lex, folder, level = stack.pop()
        if folder in seen:
            continue
        seen.add(folder)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable folders hold nothing ultralytics could read either
        subdirs = []
        for e in entries:
            if skip_hidden and e.name.startswith("."):
                continue
            path = os.path.join(lex, e.name)
            if level == 1:
                result.names.append(e.name)
            if e.is_symlink():
                found = listing.area.resolve(os.path.join(folder, e.name))
                if found.real is None:
                    if found.blocked:
                        listing.out.add(shown(path, listing.root))
                    elif is_image(e.name):
                        listing.dangling.add(shown(path, listing.root))
                    continue
                is_dir, is_file, target = found.is_dir, found.is_file, found.real
            else:
                try:
                    is_dir, is_file = e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)
                except OSError:
                    continue
                target = os.path.join(folder, e.name)
            if is_dir:
                subdirs.append((path, target))
            elif is_file:
                result.files.append((path, target))
            elif is_image(e.name):
                listing.irregular.add(shown(path, listing.root))
        if depth is not None and level >= depth:
            result.dir_paths += subdirs
            continue
        stack.extend((p, t, level + 1) for p, t in reversed(subdirs))
    return result
