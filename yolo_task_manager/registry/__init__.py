"""The SQL registry of runs, transitions and metrics: the one writer of run state.

Imports only the shared value modules (never ``broker``, ``workers`` or ``api_client``).
"""

from __future__ import annotations

from yolo_task_manager.registry.registry import Registry

__all__ = ["Registry"]
