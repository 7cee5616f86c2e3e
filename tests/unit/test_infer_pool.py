"""``InferencePool``: warm children per model identity, bounded, replaced when the file changes, and a child
that dies or hangs costs one request, not the worker. A fake child stands in for ultralytics."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import psutil
import pytest

from yolo_task_manager.errors import NotFound, YoloTaskManagerError
from yolo_task_manager.workers.infer_pool import InferencePool, ModelKey
from yolo_task_manager.workers.protocol import PredictRequest
from yolo_task_manager.workers.sandbox import SandboxedProcess, job_policy, sandbox_available, spawn

FAKE_CHILD = """
import os, sys, time, uuid
from yolo_task_manager.workers.protocol import *

token = uuid.uuid4().hex  # which child answered (in the sandbox every child is pid 1)

model = sys.argv[1]
replies = os.fdopen(int(sys.argv[3]), "w", buffering=1)
for line in os.fdopen(int(sys.argv[2])):
    request = decode(line, INFERENCE_REQUESTS)
    what = request.sources[0]["what"]
    if what == "die":
        os._exit(9)
    if what == "hang":
        time.sleep(60)
    replies.write(encode(Reply(predictions=[{"model": model, "child": token, "what": what}])))
"""


def _launch(key: ModelKey, fds: tuple[int, int], job_dir: Path, writable: Path | None) -> SandboxedProcess:
    policy = job_policy(job_dir, base_env=os.environ, read_only=(Path(key.path).parent,))
    argv = [sys.executable, "-c", FAKE_CHILD, key.path, *map(str, fds)]
    return spawn(argv, policy, sandboxed=sandbox_available(), pass_fds=fds)


def _children_of(model: Path) -> list[psutil.Process]:
    """The live fake children serving ``model``, as this machine sees them."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess):
            cmdline = p.info["cmdline"] or []
            if cmdline[:2] == [sys.executable, "-c"] and str(model) in cmdline and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def _ask(pool: InferencePool, key: ModelKey, what: str = "ok", timeout: float = 30) -> dict[str, object]:
    reply = pool.ask(key, PredictRequest(sources=[{"what": what}], opts={}), timeout)
    return reply.predictions[0]


@pytest.fixture
def pool(tmp_path: Path):
    pool = InferencePool(2, _launch, tmp_path / "jobs")
    yield pool
    pool.close()


@pytest.fixture
def models(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"m{i}.pt" for i in range(3)]
    for p in paths:
        p.write_bytes(b"weights")
    return paths


def test_repeated_requests_for_one_model_reuse_one_child(pool: InferencePool, models: list[Path]) -> None:
    # Given a model
    key = ModelKey.of("alice", models[0], "detect")

    # When it is asked three times
    pids = {_ask(pool, key)["child"] for _ in range(3)}

    # Then one child answered all three, and the model was loaded once
    assert len(pids) == 1 and pool.loads == 1


def test_the_pool_keeps_at_most_its_size_and_closes_the_least_recently_used(
    pool: InferencePool, models: list[Path]
) -> None:
    # Given two warm children (the pool holds two), m0 used last
    k0, k1, k2 = (ModelKey.of("alice", m, "detect") for m in models)
    first = _ask(pool, k0)["child"]
    _ask(pool, k1)
    _ask(pool, k0)

    # When a third model is asked for
    _ask(pool, k2)

    # Then m1's child was closed; m0's is still the same process
    assert _ask(pool, k0)["child"] == first
    assert pool.loads == 3
    _ask(pool, k1)
    assert pool.loads == 4


def test_a_replaced_model_file_is_never_answered_by_the_old_child(pool: InferencePool, models: list[Path]) -> None:
    # Given a warm child for m0
    old = ModelKey.of("alice", models[0], "detect")
    old_pid = _ask(pool, old)["child"]

    # When the file is replaced (a new model published under the same name)
    replacement = models[0].with_suffix(".new")
    replacement.write_bytes(b"other weights")
    os.replace(replacement, models[0])
    new = ModelKey.of("alice", models[0], "detect")

    # Then a new child answers, and the old one is gone
    assert new != old
    assert _ask(pool, new)["child"] != old_pid
    assert len(_children_of(models[0])) == 1


def test_a_child_that_dies_fails_one_request_and_the_next_gets_a_new_child(
    pool: InferencePool, models: list[Path]
) -> None:
    # Given a warm child
    key = ModelKey.of("alice", models[0], "detect")
    first = _ask(pool, key)["child"]

    # When a request makes it die
    with pytest.raises(YoloTaskManagerError) as info:
        _ask(pool, key, "die")

    # Then that request gets a typed error saying how it ended, and the next request is answered by a new child
    assert "exit code 9" in str(info.value)
    assert _ask(pool, key)["child"] != first


def test_a_child_that_does_not_answer_in_time_is_stopped(pool: InferencePool, models: list[Path]) -> None:
    # Given a warm child
    key = ModelKey.of("alice", models[0], "detect")
    _ask(pool, key)
    assert len(_children_of(models[0])) == 1

    # When a request hangs past its timeout
    with pytest.raises(YoloTaskManagerError) as info:
        _ask(pool, key, "hang", timeout=0.5)

    # Then the caller is told, and the child was killed
    assert "did not answer within 0.5s" in str(info.value)
    assert _children_of(models[0]) == []


def test_a_model_file_that_is_gone_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        ModelKey.of("alice", tmp_path / "missing.pt", "detect")
