"""The SSE examples answer a ``Last-Event-ID`` their feed never gave out with 400, not 500."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from yolo_task_manager import InvalidInput, NotFound, Settings, YoloTaskManager
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.storage import LocalFileSystemStorage

BAD_IDS = ["\u00b2", "9" * 5000, "abc", "-1", "1-x", "0x10", " 1"]
"""A superscript digit and a 5000-digit number (both once a 500: str.isdigit() said yes, int() no), and
ids a browser would never send back because the feed never sent them."""


def asgi_get(app: Any, url: str, headers: dict[str, str]) -> httpx.Response:
    """One request to an ASGI app, in process (starlette's TestClient warns about its httpx)."""

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            # Raw bytes, as a hostile client may send them (a server reads them as Latin-1).
            return await client.get(url, headers={k: v.encode() for k, v in headers.items()})

    return asyncio.run(get())


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def queued_run(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Iterator[tuple[YoloTaskManager, str]]:
    """A producer with no worker, and a run of hal's that stays queued (no worker serves cuda:7)."""
    tmp = tmp_path_factory.mktemp("sse")
    server = EmbeddedRedis(tmp / "redis").start()
    root = tmp / "root"
    settings = Settings(storage_root=root, redis_url=server.url, key_prefix=f"sse{uuid.uuid4().hex[:8]}")
    mgr = YoloTaskManager(LocalFileSystemStorage(root), settings=settings)
    dataset = shutil.copytree(fixtures_dir / "datasets" / "coco8", root / "hal" / "coco8")
    run_id = mgr.train("hal", "yolov8n.yaml", str(dataset), 1, run_name="sse", device="cuda:7")
    yield mgr, run_id
    mgr.close()
    server.stop()


@pytest.mark.parametrize("last_event_id", BAD_IDS, ids=["superscript", "5000-digits", "abc", "-1", "1-x", "hex", "sp"])
def test_flask_answers_a_bad_last_event_id_with_400(queued_run: tuple[YoloTaskManager, str], last_event_id: str):
    # Given the Flask example serving hal's run
    mgr, run_id = queued_run
    client = example("flask_sse.py").create_app(mgr).test_client()

    # When a client reconnects with a Last-Event-ID the feed never gave out
    response = client.get(f"/api/users/hal/runs/{run_id}/events", headers={"Last-Event-ID": last_event_id})

    # Then it gets 400 and a message saying what to send, before any stream starts
    assert response.status_code == 400, response.data[:200]
    assert "is not an event id of this run's feed" in response.get_json()["error"]


@pytest.mark.parametrize("last_event_id", BAD_IDS, ids=["superscript", "5000-digits", "abc", "-1", "1-x", "hex", "sp"])
def test_fastapi_answers_a_bad_last_event_id_with_400(queued_run: tuple[YoloTaskManager, str], last_event_id: str):
    # Given the FastAPI example serving hal's run
    mgr, run_id = queued_run
    app = example("fastapi_sse.py").create_app(mgr)

    # When a client reconnects with a Last-Event-ID the feed never gave out
    response = asgi_get(app, f"/api/users/hal/runs/{run_id}/events", {"Last-Event-ID": last_event_id})

    # Then it gets 400 and a message saying what to send
    assert response.status_code == 400, response.text[:200]
    assert "is not an event id of this run's feed" in response.json()["detail"]


def test_a_good_last_event_id_still_streams_and_other_users_runs_are_not_found(
    queued_run: tuple[YoloTaskManager, str],
) -> None:
    # Given the Flask example, an id before the run's first event, an empty one (a browser's "no id"), and another
    # user
    mgr, run_id = queued_run
    client = example("flask_sse.py").create_app(mgr).test_client()
    url = f"/api/users/hal/runs/{run_id}/events"

    # When each connects (one stream at a time: Flask's test client keeps one request context per thread)
    firsts = []
    for last_event_id in ("0", ""):
        response = client.get(url, headers={"Last-Event-ID": last_event_id}, buffered=False)
        chunks = iter(response.response)
        firsts.append((response.status_code, response.mimetype, next(chunks), next(chunks).split(b"\n")[:2]))
        response.close()
    foreign = client.get(f"/api/users/eve/runs/{run_id}/events", headers={"Last-Event-ID": "\u00b2"})

    # Then the first two stream the run's first event, and eve's request is 404 whatever her header says
    assert firsts == [(200, "text/event-stream", b"retry: 2000\n\n", [b"id: 1", b"event: status"])] * 2
    assert foreign.status_code == 404


def test_the_manager_refuses_the_same_ids_at_the_call(queued_run: tuple[YoloTaskManager, str]) -> None:
    # Given hal's run
    mgr, run_id = queued_run

    # When subscribe is called with each bad id, for the run's feed and for the user's
    # Then InvalidInput is raised at once (not at the first event), and only bad ids are refused
    for bad in BAD_IDS:
        with pytest.raises(InvalidInput):
            mgr.subscribe("hal", run_id, after=bad)
        with pytest.raises(InvalidInput):
            mgr.subscribe("hal", after=bad)
    first = next(mgr.subscribe("hal", after=None, timeout=0))[0]
    assert next(mgr.subscribe("hal", run_id, after="0"))[0] == "1"
    assert next(mgr.subscribe("hal", run_id, after=0))[0] == "1"
    assert mgr.subscribe("hal", after=first) is not None


def test_events_and_sse_answer_a_foreign_run_exactly_like_a_missing_one(
    queued_run: tuple[YoloTaskManager, str],
) -> None:
    # Given hal's run
    mgr, run_id = queued_run

    # When eve asks for its events or its SSE stream, and for a run that does not exist
    errors = []
    for call in (mgr.events, mgr.sse):
        for who, which in (("eve", run_id), ("eve", "0" * 32)):
            with pytest.raises(NotFound) as caught:
                call(who, which)
            errors.append(str(caught.value).replace(which, "<run>"))

    # Then every answer is the same NotFound; hal gets his run's events from the registry, and a bad seq is refused
    assert len(set(errors)) == 1
    assert [e.seq for e in mgr.events("hal", run_id)] == [1]
    assert mgr.events("hal", run_id, after_seq=1) == []
    for bad in (-1, "x", True):
        with pytest.raises(InvalidInput):
            mgr.events("hal", run_id, after_seq=bad)  # type: ignore[arg-type]
