"""Storage backends behind the ``IStorage`` protocol: models, exports, run folders, predictions.

Imports only the shared value modules (never ``broker``, ``workers`` or ``api_client``).
"""

from __future__ import annotations

import importlib

from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.settings import Settings
from yolo_task_manager.storage.base import IStorage
from yolo_task_manager.storage.local_fs import LocalFileSystemStorage

__all__ = ["IStorage", "LocalFileSystemStorage", "storage_from_settings"]


def storage_from_settings(settings: Settings) -> IStorage:
    """The storage a worker uses: ``storage_factory`` ("module:callable", called with the settings) or
    a ``LocalFileSystemStorage`` on ``storage_root``."""
    if not settings.storage_factory:
        return LocalFileSystemStorage(settings.storage_root)
    module_name, _, attr = settings.storage_factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(
            f"storage_factory {settings.storage_factory!r} cannot be imported ({exc}): "
            "install the module on every worker and give it as 'module:callable'"
        ) from exc
    storage: IStorage = factory(settings)
    return storage
