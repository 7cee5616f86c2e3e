"""Every error the package raises derives from :class:`YoloTaskManagerError`.

A class's docstring is its default message; each message says what to do next.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "BrokerUnavailable",
    "DatabaseUnavailable",
    "DeviceUnavailable",
    "InvalidInput",
    "InvalidTransition",
    "LimitExceeded",
    "NoLiveWorker",
    "NotFound",
    "SandboxUnavailable",
    "StorageError",
    "WaitTimeout",
    "WeightsUnavailable",
    "YoloTaskManagerError",
]


class YoloTaskManagerError(Exception):
    """yolo-task-manager failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or " ".join((self.__doc__ or "").split()))  # a docstring may wrap


class NotFound(YoloTaskManagerError):
    """No such run or model for this user: check the id with list_runs() or list_models()."""


class InvalidInput(YoloTaskManagerError, ValueError):
    """An argument is invalid: fix it and call again."""


class InvalidTransition(YoloTaskManagerError):
    """The run is not in a state that allows this operation: check get_run() for its status."""


class LimitExceeded(YoloTaskManagerError):
    """A limit was reached: wait for running work to finish."""


class WeightsUnavailable(YoloTaskManagerError):
    """The base model's weights are not on this machine: copy the file into the pretrained directory."""


class StorageError(YoloTaskManagerError):
    """The storage backend failed: check the volume is mounted and writable."""


class BrokerUnavailable(YoloTaskManagerError):
    """Redis cannot be reached: check redis_url and that the server is running."""


class AlreadyExists(InvalidInput):
    """This user already has an object of that name: choose another name, or delete the old one first."""


class DatabaseUnavailable(BrokerUnavailable):
    """The registry database cannot be reached: check database_url and that the server is running."""


class NoLiveWorker(BrokerUnavailable):
    """No live worker serves this device: start one with `ytm worker --device ...`."""


class SandboxUnavailable(YoloTaskManagerError):
    """bubblewrap cannot build a sandbox on this machine: install it (`apt install bubblewrap`) and allow user
    namespaces (sysctl kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0;
    in Docker a seccomp profile that allows unshare), or set YTM_SANDBOX=off to run tenant code unsandboxed,
    accepting that one tenant's files can then reach every other tenant's data."""


class DeviceUnavailable(InvalidInput):
    """The requested device does not exist on this machine: pick one that `nvidia-smi -L` lists, or 'cpu'."""


class WaitTimeout(YoloTaskManagerError, TimeoutError):
    """The run did not finish in time: it goes on; call wait() again or check get_run()."""
