"""The SSE examples, served for real on loopback and read by a real HTTP client that reconnects."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.integration.conftest import TINY, Stack, http_server
from yolo_task_manager.broker.embedded import free_port

pytestmark = pytest.mark.slow


def read_sse(response: httpx.Response) -> Iterator[tuple[str, str, dict]]:
    """(id, event, data) for each message of an SSE response."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        elif "data" in fields:
            yield fields["id"], fields["event"], json.loads(fields["data"])
            fields = {}
        else:
            fields = {}


@pytest.fixture(params=["flask_sse.py", "fastapi_sse.py"])
def server(request, stack: Stack) -> Iterator[str]:
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, str(REPO / "examples" / request.param), "--port", url.rsplit(":", 1)[1]]
    with http_server(cmd, {**os.environ, **stack.settings.to_env()}, f"{url}/api/users/nobody/runs/x/events", 404):
        yield url


def test_events_stream_live_and_a_reconnect_misses_nothing(stack: Stack, server: str, shapes: Path):
    # Given: a 3-epoch training
    stack.start_worker()
    mgr = stack.manager()
    run_id = mgr.train("hal", "yolov8n.pt", str(shapes), epochs=3, run_name="sse", **TINY)
    url = f"{server}/api/users/hal/runs/{run_id}/events"

    # When: a client reads until the first epoch, drops the connection, and reconnects with Last-Event-ID
    first: list[tuple[str, str, dict]] = []
    with httpx.stream("GET", url, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in read_sse(response):
            first.append(message)
            if message[1] == "metrics":
                break
    time.sleep(1)  # events keep coming while nobody listens
    with httpx.stream("GET", url, headers={"Last-Event-ID": first[-1][0]}, timeout=300) as response:
        second = list(read_sse(response))

    # Then: every event once, in order, ending with the completed status
    ids = [int(i) for i, _, _ in first + second]
    assert ids == list(range(1, len(ids) + 1))
    assert [d["epoch"] for _, kind, d in first + second if kind == "metrics"] == [1, 2, 3]
    assert second[-1][1] == "status" and second[-1][2]["status"] == "completed"
    assert all(d["run_id"] == run_id and d["seq"] == int(i) for i, _, d in first + second)


def test_another_users_run_is_not_found(stack: Stack, server: str, coco8: Path):
    mgr = stack.manager()
    run_id = mgr.train("ida", "yolov8n.pt", str(coco8), epochs=1, run_name="private", device="cuda:7", **TINY)
    assert httpx.get(f"{server}/api/users/eve/runs/{run_id}/events", timeout=10).status_code == 404


@pytest.fixture(params=["flask_sse.py", "fastapi_sse.py"])
def quick_server(request, stack: Stack) -> Iterator[str]:
    """An example server whose streams send a keep-alive after each quiet second."""
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, str(REPO / "examples" / request.param), "--port", url.rsplit(":", 1)[1]]
    env = {**os.environ, **stack.settings.to_env(), "YTM_SSE_KEEPALIVE": "1"}
    with http_server(cmd, env, f"{url}/api/users/nobody/runs/x/events", 404):
        yield url


def test_reconnects_after_the_end_and_clients_that_leave_never_exhaust_the_server(
    stack: Stack, quick_server: str, coco8: Path
):
    # Given: a run that ended (stopped while queued: events 1 queued, 2 stopped) and one that stays queued
    mgr = stack.manager()
    done = mgr.train("jo", "yolov8n.pt", str(coco8), epochs=1, run_name="ended", device="cuda:7", **TINY)
    mgr.stop("jo", done)
    waiting = mgr.train("jo", "yolov8n.pt", str(coco8), epochs=1, run_name="waiting", device="cuda:7", **TINY)

    # When: 60 clients reconnect to the ended run after its last event, 60 more after its first, and 60 open
    # the waiting run's stream, read its first event and leave
    after_end = [list(read_sse(r)) for r in _gets(f"{quick_server}/api/users/jo/runs/{done}/events", "2", 60)]
    after_first = [list(read_sse(r)) for r in _gets(f"{quick_server}/api/users/jo/runs/{done}/events", "1", 60)]
    for _ in range(60):
        with httpx.stream("GET", f"{quick_server}/api/users/jo/runs/{waiting}/events", timeout=30) as response:
            assert next(read_sse(response))[0] == "1"

    # Then: each ended stream ended at once (nothing, or only the stop), and the server still answers
    assert after_end == [[]] * 60
    assert all([(i, kind, d["status"]) for i, kind, d in m] == [("2", "status", "stopped")] for m in after_first)
    with httpx.stream("GET", f"{quick_server}/api/users/jo/runs/{waiting}/events", timeout=30) as response:
        assert next(read_sse(response))[0] == "1"


def _gets(url: str, last_event_id: str, count: int) -> Iterator[httpx.Response]:
    """``count`` GETs of a whole SSE stream, one after another; each must end by itself within 30 s."""
    for _ in range(count):
        with httpx.stream("GET", url, headers={"Last-Event-ID": last_event_id}, timeout=30) as response:
            response.read()
            yield response
