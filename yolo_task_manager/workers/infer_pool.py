"""Warm inference children: one per (user, model file, task), bounded, the least recently used closed first.

Each child loads its model once and answers one request at a time over its pipes, so a warm call costs a
pipe round trip, not a model load. A replaced or deleted model file is never served: the key holds the
file's identity (inode, mtime, size), and a child of an older identity of the same path is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import subprocess
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from yolo_task_manager.errors import NotFound, YoloTaskManagerError
from yolo_task_manager.workers.protocol import INFERENCE_REPLIES, Message, ProtocolError, Reply, decode, encode
from yolo_task_manager.workers.sandbox import SandboxedProcess

__all__ = ["InferencePool", "ModelKey"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """A model file as one identity: a new file at the same path is another key."""

    user_id: str
    path: str
    task: str
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, user_id: str, path: Path, task: str) -> ModelKey:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"the model file {path.name} is gone (deleted meanwhile?): see list_models()") from None
        return cls(user_id, str(path), task, st.st_ino, st.st_mtime_ns, st.st_size)


Launch = Callable[[ModelKey, tuple[int, int], Path, "Path | None"], SandboxedProcess]
"""Starts a child for a model in its job folder, reading requests from and replying on the given fds, with
an extra writable folder (or None)."""


class _Child:
    def __init__(self, launch: Launch, key: ModelKey, jobs_dir: Path, writable: Path | None) -> None:
        self.job_dir = jobs_dir / uuid.uuid4().hex
        self.job_dir.mkdir(parents=True)
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            self.process = launch(key, (requests_r, replies_w), self.job_dir, writable)
        except BaseException:
            for fd in (requests_w, replies_r):
                os.close(fd)
            shutil.rmtree(self.job_dir, ignore_errors=True)
            raise
        finally:
            os.close(requests_r)
            os.close(replies_w)
        self.requests: IO[bytes] = os.fdopen(requests_w, "wb")
        self.replies: IO[bytes] = os.fdopen(replies_r, "rb")
        self.lock = threading.Lock()

    def ask(self, request: Message, timeout: float) -> Reply:
        try:
            self.requests.write(encode(request).encode())
            self.requests.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None
        with selectors.DefaultSelector() as sel:
            sel.register(self.replies, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.close()
                raise YoloTaskManagerError(f"the inference process did not answer within {timeout:g}s: it was stopped")
        line = self.replies.readline()
        if not line.endswith(b"\n"):
            raise self._died()
        try:
            reply = decode(line, INFERENCE_REPLIES)
        except ProtocolError:
            self.close()
            raise YoloTaskManagerError("the inference process sent something other than a reply") from None
        if not isinstance(reply, Reply):
            raise YoloTaskManagerError("the inference process sent something other than a reply")
        return reply

    def _died(self) -> YoloTaskManagerError:
        with contextlib.suppress(subprocess.TimeoutExpired):  # it closed its pipe: let it finish dying first
            self.process.wait(5)
        self.close()
        code = self.process.returncode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return YoloTaskManagerError(f"the inference process ended ({how}); see the worker's inference log")

    def alive(self) -> bool:
        return self.process.process.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.requests.close()
        self.process.close()
        self.replies.close()
        shutil.rmtree(self.job_dir, ignore_errors=True)


class InferencePool:
    """Bounded warm children; ``size`` of them at most, the least recently used closed first."""

    def __init__(self, size: int, launch: Launch, jobs_dir: Path) -> None:
        self.size = max(1, size)
        self._launch = launch
        self._jobs_dir = jobs_dir
        shutil.rmtree(jobs_dir, ignore_errors=True)  # what a killed worker left
        self._children: OrderedDict[ModelKey, _Child] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        """Children started: each loads its model once."""

    def ask(self, key: ModelKey, request: Message, timeout: float) -> Reply:
        """Send ``request`` to the warm child of ``key`` (started on demand) and return its reply."""
        child = self._child(key)
        with child.lock:
            return child.ask(request, timeout)

    def ask_once(self, key: ModelKey, request: Message, timeout: float, writable: Path) -> Reply:
        """Send ``request`` to a child of its own that may also write ``writable`` (an export), then close it."""
        child = _Child(self._launch, key, self._jobs_dir, writable)
        try:
            return child.ask(request, timeout)
        finally:
            child.close()

    def _child(self, key: ModelKey) -> _Child:
        with self._lock:
            closing = [k for k in self._children if k.path == key.path and k != key]
            child = self._children.get(key)
            if child is not None and not child.alive():
                closing.append(key)
                child = None
            doomed = [self._children.pop(k) for k in closing if k in self._children]
            if child is None:
                child = _Child(self._launch, key, self._jobs_dir, None)
                self.loads += 1
                self._children[key] = child
            self._children.move_to_end(key)
            while len(self._children) > self.size:
                doomed.append(self._children.popitem(last=False)[1])
        for old in doomed:
            with old.lock:  # let a request it is answering finish first
                old.close()
        return child

    def close(self) -> None:
        with self._lock:
            children = list(self._children.values())
            self._children.clear()
        for child in children:
            child.close()

