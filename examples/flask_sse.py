"""Live training events as Server-Sent Events from Flask (>= 2.2), with reconnects that miss nothing.

    YTM_REDIS_URL=redis://127.0.0.1:6379/0 YTM_STORAGE_ROOT=/data python examples/flask_sse.py --port 8000
    curl -N http://127.0.0.1:8000/api/users/alice/runs/<run_id>/events

A browser's EventSource reconnects by itself and sends ``Last-Event-ID``; the stream goes on from there, and
ends at once for a run that already ended. A ``: keep-alive`` comment every ``sse_keepalive`` seconds
(YTM_SSE_KEEPALIVE) keeps proxies from closing a quiet stream.
Take ``user_id`` from your authentication, not from the URL, in a real service.
"""

from __future__ import annotations

import argparse

from flask import Flask, Response, request, stream_with_context

from yolo_task_manager import InvalidInput, NotFound, Settings, YoloTaskManager


def create_app(mgr: YoloTaskManager) -> Flask:
    app = Flask(__name__)

    @app.get("/api/users/<user_id>/runs/<run_id>/events")
    def run_events(user_id: str, run_id: str) -> Response:
        # NotFound -> 404, and a Last-Event-ID this feed never gave out -> 400, before the stream starts.
        stream = mgr.sse(user_id, run_id, request.headers.get("Last-Event-ID"))
        return Response(
            stream_with_context(stream),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> tuple[dict[str, str], int]:
        return {"error": str(exc)}, 404

    @app.errorhandler(InvalidInput)
    def bad_request(exc: InvalidInput) -> tuple[dict[str, str], int]:
        return {"error": str(exc)}, 400

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with YoloTaskManager(settings=Settings.from_env()) as manager:
        create_app(manager).run(host=args.host, port=args.port, threaded=True)
