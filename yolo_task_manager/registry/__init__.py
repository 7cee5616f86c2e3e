"""The SQL registry of runs, transitions, metrics and events: the one writer of run state.

Imports only the shared value modules (never ``broker``, ``workers`` or ``api_client``).
"""

from __future__ import annotations

from yolo_task_manager.registry.event_log import EventLog
from yolo_task_manager.registry.registry import Registry

__all__ = ["EventLog", "Registry"]
