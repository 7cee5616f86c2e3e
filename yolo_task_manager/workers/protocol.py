"""What the training child and its supervising worker agree on: exit codes and the spec file."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_ORPHANED", "EXIT_STOPPED", "SPEC_FILE"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3
"""The child stopped at a batch boundary on request, keeping the last epoch's resumable last.pt."""
EXIT_ORPHANED = 4
"""The child noticed that its worker died, and quit."""

SPEC_FILE = "spec.json"
