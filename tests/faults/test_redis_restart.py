"""Redis restarted under a real training, once with its append-only file and once empty: the callbacks,
``subscribe()`` and an SSE client (the FastAPI example under uvicorn) each see seq 1..N once, in order, every
epoch once, and the final status.

Everything is this test's own: a redis-server on a free loopback port, a `ytm worker` process, a SQLite
registry, the example server. The fixtures stay in this file (``tests/faults/conftest.py`` belongs to the
fault suite as a whole).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.integration import conftest as integration
from tests.integration.conftest import TINY, Stack, http_server, new_stack, wait_for
from yolo_task_manager import RunStatus
from yolo_task_manager.broker.embedded import EmbeddedRedis, free_port
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.values import Event, EventType

pytestmark = pytest.mark.slow

EPOCHS = 6

# The integration suite's session fixtures (a base checkpoint, the shapes dataset), which this folder's
# conftest does not provide.
base_checkpoint = integration.base_checkpoint
datasets_dir = integration.datasets_dir
shapes = integration.shapes


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def own_stack(
    own_redis: EmbeddedRedis, base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path
) -> Iterator[Stack]:
    s = new_stack(tmp_path_factory.mktemp("root"), own_redis, base_checkpoint, shared=(datasets_dir,))
    yield s
    s.close()


def restart(server: EmbeddedRedis, *, empty: bool) -> None:
    """Stop the server and start it again on the same port; ``empty`` deletes its data first."""
    server.stop()
    if empty:
        for path in server.data_dir.iterdir():
            if path.name not in (server.CONFIG, "redis.log"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    server.start()


class SseClient(threading.Thread):
    """Reads a run's SSE stream to its end, reconnecting with Last-Event-ID when the connection drops."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.messages: list[tuple[str, str, dict[str, object]]] = []
        self.connections = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._ended() and self.connections < 20:
                headers = {"Last-Event-ID": self.messages[-1][0]} if self.messages else {}
                self.connections += 1
                try:
                    with httpx.stream("GET", self.url, headers=headers, timeout=120) as response:
                        response.raise_for_status()
                        self._read(response)
                except httpx.TransportError:
                    continue
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.error = exc

    def _read(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.lstrip(" ")
            elif "data" in fields:
                self.messages.append((fields["id"], fields["event"], json.loads(fields["data"])))
                fields = {}
            else:
                fields = {}

    def _ended(self) -> bool:
        return bool(self.messages) and self.messages[-1][2].get("status") in ("completed", "failed")


def test_a_redis_restart_with_and_without_its_data_skips_and_repeats_no_event(
    own_stack: Stack, own_redis: EmbeddedRedis, shapes: Path
) -> None:
    # Given: a worker, the FastAPI example, and a training followed by callbacks, subscribe() and an SSE client
    own_stack.start_worker()
    mgr = own_stack.manager()
    port = free_port()
    cmd = [sys.executable, str(REPO / "examples" / "fastapi_sse.py"), "--port", str(port)]
    env = {**os.environ, **own_stack.settings.to_env(), "YTM_SSE_KEEPALIVE": "1"}
    with http_server(cmd, env, f"http://127.0.0.1:{port}/api/users/nobody/runs/x/events", 404):
        called: list[Event] = []
        run_id = mgr.train("kim", "yolov8n.pt", str(shapes), epochs=EPOCHS, run_name="storm",
                           callbacks={"on_event": called.append}, **TINY)  # fmt: skip
        subscribed: list[tuple[str, Event]] = []
        reader = threading.Thread(target=lambda: subscribed.extend(mgr.subscribe("kim", run_id)), daemon=True)
        reader.start()
        sse = SseClient(f"http://127.0.0.1:{port}/api/users/kim/runs/{run_id}/events")
        sse.start()

        def epochs_reported() -> int:
            return len([e for e in mgr.events("kim", run_id) if e.type is EventType.METRICS])

        # When: Redis restarts with its data after epoch 2, and without any after epoch 4
        wait_for(lambda: epochs_reported() >= 2, 300, "epoch 2")
        restart(own_redis, empty=False)
        wait_for(lambda: epochs_reported() >= 4, 300, "epoch 4")
        restart(own_redis, empty=True)
        assert not mgr.get_run("kim", run_id).is_terminal  # both restarts came mid-run
        run = mgr.wait("kim", run_id, timeout=300)
        stream = own_stack.redis.xrange(Keys(own_stack.settings.key_prefix).run_stream(run_id), count=1)
        reader.join(timeout=120)
        sse.join(timeout=120)

    # Then: the run completed; the registry, the callbacks, subscribe() and the SSE client each have seq 1..N
    # once and in order, every epoch once and in order, and end with the completion
    assert run.status is RunStatus.COMPLETED, run.reason
    assert int(stream[0][1][b"seq"]) > 1  # Redis did lose the run's first events
    logged = mgr.events("kim", run_id)
    n = len(logged)
    assert [e.seq for e in logged] == list(range(1, n + 1))
    assert [e.epoch for e in logged if e.type is EventType.METRICS] == list(range(1, EPOCHS + 1))
    wait_for(lambda: len(called) >= n, 60, "the callbacks to catch up")
    assert not reader.is_alive() and not sse.is_alive() and sse.error is None
    for seen in (called, [e for _, e in subscribed]):
        assert [e.seq for e in seen] == list(range(1, n + 1))
        assert [e.epoch for e in seen if e.type is EventType.METRICS] == list(range(1, EPOCHS + 1))
        assert seen[-1].status is RunStatus.COMPLETED
    assert [event_id for event_id, _ in subscribed] == [str(s) for s in range(1, n + 1)]
    assert [int(i) for i, _, _ in sse.messages] == list(range(1, n + 1))
    assert [d["epoch"] for _, kind, d in sse.messages if kind == "metrics"] == list(range(1, EPOCHS + 1))
    assert sse.messages[-1][2]["status"] == "completed"
