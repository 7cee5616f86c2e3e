"""Reading a tenant's files as data: bounded in size, never blocking on a FIFO, YAML without alias bombs.

Messages quote a tenant's own file only as a short excerpt with control characters escaped, so a crafted
file cannot flood a log or paint a terminal.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from yolo_task_manager.errors import InvalidInput

__all__ = [
    "MAX_DATA_YAML_BYTES",
    "MAX_IMAGE_LIST_BYTES",
    "MAX_LABEL_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "UnreadableFile",
    "excerpt",
    "load_yaml",
    "load_yaml_nodes",
    "open_regular",
    "read_capped",
    "shown",
]

MAX_DATA_YAML_BYTES = 1 << 20
"""A data.yaml (or model yaml) above 1 MiB is refused: real ones are a few KiB, ImageNet-21k's names ~0.5 MiB."""
MAX_LABEL_BYTES = 16 << 20
"""A label file above 16 MiB (some 300,000 boxes for one image) is refused."""
MAX_IMAGE_LIST_BYTES = 64 << 20
"""An image-list .txt above 64 MiB (about a million paths) is refused."""
MAX_YAML_NODES = 100_000
"""Nodes a YAML document may hold once its aliases are expanded (a "billion laughs" file expands to 10**9)."""
MAX_YAML_DEPTH = 64
"""Nesting depth of a YAML document."""
_EXCERPT = 80
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class UnreadableFile(InvalidInput):
    """A tenant's file is not a regular file, is too big, or cannot be read."""

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(f"{what} {shown(path)} {reason}")
        self.reason = reason


def excerpt(value: object, limit: int = _EXCERPT) -> str:
    """``value`` quoted, at most ``limit`` characters of it, control and format characters escaped."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    out = []
    for ch in text[:limit]:
        if ch == "'" or ch == "\\":
            out.append("\\" + ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + ("…" if cut else "") + "'"


def shown(path: str | Path, root: Path | None = None, limit: int = 120) -> str:
    """A path as the tenant knows it (relative to ``root`` when inside it), escaped like ``excerpt`` and
    unquoted; a long one keeps its end, where the file name is."""
    text = os.fspath(path)
    if root is not None:
        prefix = os.fspath(root).rstrip(os.sep) + os.sep
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if len(text) > limit:
        return "…" + excerpt(text[-limit:], limit)[1:-1]
    return excerpt(text, limit)[1:-1]


def open_regular(real: str, what: str = "file") -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file ``real`` and its status; a FIFO, device, socket or link is
    refused unread (it is opened ``O_NONBLOCK``, so even a FIFO swapped in meanwhile cannot block).

    Raises:
        UnreadableFile: it is not a regular file or cannot be opened.
    """
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        raise UnreadableFile(what, real, f"cannot be opened ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise UnreadableFile(what, real, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnreadableFile(what, real, "is not a regular file: replace it with a plain file")
    return fd, st  # O_NONBLOCK means nothing to a regular file's reads


def read_capped(real: str, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``real``, refused past ``limit`` bytes.

    Raises:
        UnreadableFile: not a regular file, unreadable, or larger than ``limit``.
    """
    fd, st = open_regular(real, what)
    try:
        if st.st_size > limit:
            raise UnreadableFile(what, real, f"is larger than {_size(limit)}: split it or shrink it")
        # Ask for what the file holds (plus a byte, to see it grew), never for ``limit`` itself: a read of
        # 16 MiB allocates 16 MiB, for every small label file.
        chunks, total = [], 0
        asked = st.st_size + 1
        while total <= limit:
            chunk = os.read(fd, asked)
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < asked:  # end of file
                break
            asked = 1 << 20
    except OSError as exc:
        raise UnreadableFile(what, real, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if total > limit:
        raise UnreadableFile(what, real, f"is larger than {_size(limit)}: split it or shrink it")
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


class _YamlLimit(yaml.YAMLError):
    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (the pure Python one: its recursion is bounded here) with a depth limit."""

    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self._depth, self._max_depth = 0, max_depth

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise _YamlLimit(f"nested deeper than {self._max_depth} levels", self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in ``root`` with every alias expanded, counting stops past ``limit``; aliases that loop are refused."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            if sizes[key] > limit:
                return sizes[key]
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _YamlLimit("an alias refers to a node that contains it", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(
    data: bytes | str, source: str, *, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH
) -> Any:
    """Parse one YAML document with safe tags only, refusing alias expansion past ``max_nodes`` nodes.

    Raises:
        InvalidInput: not UTF-8, not YAML, too deep, or too big once expanded; names ``source`` and the line.
    """
    return load_yaml_nodes(data, source, max_nodes=max_nodes, max_depth=max_depth)[0]


def load_yaml_nodes(
    data: bytes | str, source: str, *, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH
) -> tuple[Any, yaml.Node | None]:
    """``load_yaml``, and the document's node tree, whose marks say where each value is written."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    loader = _BoundedLoader(text, max_depth)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        if _expanded_size(node, max_nodes) > max_nodes:
            raise _YamlLimit(f"expands to more than {max_nodes} values through its aliases (&anchor/*alias)", None)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source} is not readable YAML ({_yaml_problem(exc)}): fix the file") from None
    except RecursionError:
        raise InvalidInput(f"{source} is not readable YAML (nested too deeply): fix the file") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return where + excerpt(problem)[1:-1]
