"""The security tests that go through a real worker use the integration tests' deployment fixtures."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    base_checkpoint,
    coco8,
    datasets_dir,
    redis_server,
    shapes,
    stack,
)
