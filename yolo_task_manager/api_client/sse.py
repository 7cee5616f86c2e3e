"""Server-Sent Events from run events; framework-free, so Flask, FastAPI or anything can serve it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from yolo_task_manager.values import Event

__all__ = ["format_sse", "sse_stream"]


def format_sse(event: Event, event_id: str) -> str:
    """One SSE message: ``id`` (what ``Last-Event-ID`` will send back), ``event`` (the type), ``data`` (JSON)."""
    return f"id: {event_id}\nevent: {event.type.value}\ndata: {event.to_json()}\n\n"


def sse_stream(events: Iterable[tuple[str, Event]], *, retry_ms: int = 2000) -> Iterator[str]:
    """SSE text for ``(event_id, event)`` pairs as ``YoloTaskManager.subscribe`` yields them."""
    yield f"retry: {retry_ms}\n\n"
    for event_id, event in events:
        yield format_sse(event, event_id)
