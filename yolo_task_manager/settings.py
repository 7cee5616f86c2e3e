"""One frozen ``Settings``; ``Settings.from_env()`` is the only reader of ``YTM_*`` variables."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yolo_task_manager.errors import InvalidInput

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "SANDBOX_MODES", "Settings"]

SANDBOX_MODES = ("on", "off", "auto")
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration shared by the producer API, the workers and the CLI.

    ``redis_url=None`` means "embedded": the manager starts a Redis server and a local worker.
    ``database_url=None`` means a SQLite file under ``storage_root``.
    """

    storage_root: Path = Path("./ytm-data")
    redis_url: str | None = field(default=None, repr=False)  # credentials: never in a repr
    database_url: str | None = field(default=None, repr=False)
    key_prefix: str = "ytm"
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0] or "node")
    global_limit: int | None = None
    per_user_limit: int | None = None
    lease_ttl: float = 30.0
    heartbeat_interval: float = 2.0
    """At most a quarter of ``lease_ttl``: see ``silence_limit`` for why."""
    tick_interval: float = 2.0
    stop_grace: float = 30.0
    dispatch_timeout: float = 300.0
    visibility_timeout: float = 7 * 24 * 3600.0
    storage_factory: str | None = None
    model_cache_size: int = 4
    """Models each worker keeps loaded for inference."""
    max_attempts: int = 3
    """Attempts of a run whose training may die on its own (killed by a signal, or exiting without reporting an
    error) before the run fails; a reported error or bad input fails the run at once. Lost workers do not count."""
    max_worker_losses: int = 50
    """Attempts of a run that may end interrupted (its worker vanished, froze or shut down) before the run fails."""
    max_queued_per_user: int | None = None
    """Runs one user may have waiting (queued) at once; ``train()`` past it raises ``LimitExceeded``. None: no limit."""
    user_data_dirs: tuple[Path, ...] = ()
    """Folders outside the storage root that belong to one user each, with ``{user_id}`` in their path
    (``/datasets/{user_id}``): that user may read them, no other. ``YTM_USER_DATA_DIRS`` is colon-separated."""
    shared_data_dirs: tuple[Path, ...] = ()
    """Folders outside the storage root that every user may read (a curated dataset library). A path a user
    names must lie in one of these, in their ``user_data_dirs``, or in their own ``{storage_root}/{user_id}/``.
    ``YTM_SHARED_DATA_DIRS`` is colon-separated."""
    sandbox: str | None = None
    """Whether the children that read tenant content (training, inference, export) run in bubblewrap: "on" (a
    worker that cannot refuses to start), "off" (tenant code then reaches the worker's files and network, and
    every job logs a warning), or "auto" (when bubblewrap works here). None: "on" for `ytm worker`, "auto" for
    the embedded single-machine default."""
    child_memory: int | None = field(default=None, metadata={"bytes": True})
    """Memory a training child may use, in bytes (YTM_CHILD_MEMORY also reads 512M, 8G, 1T); None: no limit."""
    child_max_processes: int | None = 512
    """Processes a training child may run at once (its pids cgroup counts each thread as one); None: no limit."""
    file_mode: int = 0o600
    """Mode of the files the system creates (folders get the matching x bits): 0o660 for a group-shared volume.
    ``YTM_FILE_MODE`` is octal (``0660``)."""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Inference refuses an image whose header declares more pixels, before decoding it."""
    redis_patience: float = 60.0
    """Seconds a feed (``subscribe()``, SSE) keeps reconnecting to a Redis that is away, delivering what the
    registry holds meanwhile, before it raises ``BrokerUnavailable``."""
    sse_keepalive: float = 15.0
    """Seconds of quiet after which an SSE stream sends a ``: keep-alive`` comment (so proxies keep it open
    and the server notices a client that left)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage_root", Path(self.storage_root).expanduser().absolute())
        for name in ("user_data_dirs", "shared_data_dirs"):
            dirs = tuple(Path(p).expanduser().absolute() for p in getattr(self, name))
            if any(_overlaps(p, self.storage_root) for p in dirs):
                raise InvalidInput(f"{name} must lie outside the storage root, and not hold it: {dirs}")
            if name == "user_data_dirs" and any("{user_id}" not in p.parts for p in dirs):
                raise InvalidInput(f"each of user_data_dirs must have a folder named {{user_id}}: {dirs}")
            object.__setattr__(self, name, dirs)
        if self.sandbox is not None and self.sandbox not in SANDBOX_MODES:
            raise InvalidInput(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {self.sandbox!r}")
        for name in ("global_limit", "per_user_limit", "max_queued_per_user", "child_memory", "child_max_processes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"{name} must be a positive integer or None, got {value!r}")
        mode = self.file_mode
        if isinstance(mode, bool) or not isinstance(mode, int) or mode & ~0o666 or mode & 0o600 != 0o600:
            raise InvalidInput(f"file_mode must be like 0o600 or 0o660 (owner read-write, no x bits), got {mode!r}")
        pixels = self.max_image_pixels
        if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
            raise InvalidInput(f"max_image_pixels must be a positive integer, got {pixels!r}")
        for name in ("redis_patience", "sse_keepalive"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
                raise InvalidInput(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("max_attempts", "max_worker_losses"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.heartbeat_interval * 4 <= self.lease_ttl:
            raise InvalidInput(
                f"lease_ttl ({self.lease_ttl:g}s) must be at least 4 x heartbeat_interval "
                f"({self.heartbeat_interval:g}s): a training child must be gone before its lease can expire"
            )

    def readable_dirs(self, user_id: str) -> tuple[Path, ...]:
        """The folders outside the storage root that ``user_id`` (a validated id) may read."""
        own = tuple(Path(str(p).replace("{user_id}", user_id)) for p in self.user_data_dirs)
        return own + self.shared_data_dirs

    @property
    def silence_limit(self) -> float:
        """Seconds a training child trains on without a keep-alive from its worker, then quits: ``lease_ttl / 2``.

        The margins (docs/architecture.md, "Exactly one training"): a worker sends a keep-alive only while its
        last renewal is younger than ``keep_alive_window`` (3/8 of the TTL); the child quits at most
        ``silence_limit`` (1/2) after the last keep-alive, plus ``save_wait`` (1/8) if a checkpoint save is
        under way. 3/8 + 1/2 + 1/8 = 1: the child is gone by the time the lease can expire.
        """
        return self.lease_ttl / 2

    @property
    def save_wait(self) -> float:
        """Seconds an orphaned child lets a checkpoint save finish before it quits anyway (``lease_ttl / 8``)."""
        return self.lease_ttl / 8

    @property
    def keep_alive_window(self) -> float:
        """A worker keeps its child alive only while its last lease renewal is younger than this."""
        return self.lease_ttl - self.silence_limit - self.save_wait

    @property
    def state_dir(self) -> Path:
        """Where the embedded Redis, the SQLite registry and worker scratch space live."""
        return self.storage_root / ".ytm"

    @property
    def pretrained_dir(self) -> Path:
        """Where ``base_model="yolov8n.pt"`` is looked up: the operator's folder, outside every user's namespace
        (``{storage_root}/pretrained/``, its place before 0.2, is no longer read)."""
        return self.storage_root / "_system" / "pretrained"

    @property
    def dir_mode(self) -> int:
        """``file_mode`` with x wherever it has r: 0o600 -> 0o700, 0o660 -> 0o770."""
        return self.file_mode | (self.file_mode & 0o444) >> 2

    @property
    def umask(self) -> int:
        """The umask under which new files get ``file_mode`` and new folders ``dir_mode``."""
        return 0o777 & ~self.dir_mode

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'registry.db'}"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The ``YTM_*`` variables that make ``from_env()`` rebuild these settings in a child process."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[f"YTM_{f.name.upper()}"] = _format(f.name, value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``YTM_<FIELD>`` variables; keyword arguments win."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"YTM_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse_bytes(f.name, raw) if f.metadata.get("bytes") else _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _format(name: str, value: object) -> str:
    if name == "file_mode" and isinstance(value, int):
        return f"{value:04o}"
    if isinstance(value, tuple):
        return ":".join(str(v) for v in value)
    return str(value)


def _parse(name: str, type_name: str, raw: str) -> object:
    if "tuple" in type_name:
        return tuple(Path(p) for p in raw.split(":") if p)
    if name == "file_mode":
        try:
            return int(raw, 8)
        except ValueError:
            raise InvalidInput(f"YTM_FILE_MODE={raw!r} is not an octal mode like 0600 or 0660") from None
    try:
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except ValueError:
        raise InvalidInput(f"YTM_{name.upper()}={raw!r} is not a number") from None
    if "Path" in type_name:
        return Path(raw)
    return raw


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_bytes(name: str, raw: str) -> int:
    """A byte count: digits, optionally followed by K, M, G or T (powers of 1024, as Docker reads them)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", raw, re.IGNORECASE)
    if match is None:
        raise InvalidInput(f"YTM_{name.upper()}={raw!r} is not a size: write bytes, or a number and K, M, G or T")
    return int(match[1]) * _UNITS[match[2].upper()]
