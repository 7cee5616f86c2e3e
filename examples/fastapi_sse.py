"""Live training events as Server-Sent Events from FastAPI, with reconnects that miss nothing.

    YTM_REDIS_URL=redis://127.0.0.1:6379/0 YTM_STORAGE_ROOT=/data python examples/fastapi_sse.py --port 8000
    curl -N http://127.0.0.1:8000/api/users/alice/runs/<run_id>/events

The feed blocks on Redis, so it is a plain generator that Starlette advances in its thread pool (40 threads).
``mgr.sse`` never leaves a thread waiting for good: a run that already ended ends its stream at once, and a
``: keep-alive`` comment every ``sse_keepalive`` seconds (YTM_SSE_KEEPALIVE) lets Starlette notice a client that
left, so the thread goes back to the pool.
Take ``user_id`` from your authentication, not from the URL, in a real service.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import StreamingResponse

from yolo_task_manager import InvalidInput, NotFound, Settings, YoloTaskManager


def create_app(mgr: YoloTaskManager) -> FastAPI:
    app = FastAPI()

    @app.get("/api/users/{user_id}/runs/{run_id}/events")
    def run_events(user_id: str, run_id: str, last_event_id: str | None = Header(None)) -> StreamingResponse:
        try:
            stream = mgr.sse(user_id, run_id, last_event_id)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except InvalidInput as exc:  # a Last-Event-ID this feed never gave out
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with YoloTaskManager(settings=Settings.from_env()) as manager:
        uvicorn.run(create_app(manager), host=args.host, port=args.port)
