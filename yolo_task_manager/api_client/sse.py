"""Server-Sent Events from run events; framework-free, so Flask, FastAPI or anything can serve it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from yolo_task_manager.values import Event

__all__ = ["KEEP_ALIVE", "format_sse", "sse_stream"]

KEEP_ALIVE = ": keep-alive\n\n"
"""An SSE comment: clients ignore it; proxies see traffic, and a server writing it learns the client left."""


def format_sse(event: Event, event_id: str) -> str:
    """One SSE message: ``id`` (what ``Last-Event-ID`` will send back), ``event`` (the type), ``data`` (JSON)."""
    return f"id: {event_id}\nevent: {event.type.value}\ndata: {event.to_json()}\n\n"


def sse_stream(events: Iterable[tuple[str, Event] | None], *, retry_ms: int = 2000) -> Iterator[str]:
    """SSE text for ``(event_id, event)`` pairs as ``YoloTaskManager.subscribe`` yields them; a None (what
    ``YoloTaskManager.sse`` yields after ``sse_keepalive`` quiet seconds) becomes a ``: keep-alive`` comment."""
    yield f"retry: {retry_ms}\n\n"
    for item in events:
        if item is None:
            yield KEEP_ALIVE
        else:
            yield format_sse(item[1], item[0])
