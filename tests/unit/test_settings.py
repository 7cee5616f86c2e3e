"""``Settings``: ``from_env`` parses ``YTM_*`` variables, keyword arguments win, and ``to_env`` round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.settings import Settings


def test_from_env_parses_every_kind_of_field(tmp_path: Path) -> None:
    # Given YTM_* variables for a path, strings, integers and floats
    environ = {
        "YTM_STORAGE_ROOT": str(tmp_path / "data"),
        "YTM_REDIS_URL": "redis://redis:6379/0",
        "YTM_DATABASE_URL": "postgresql+psycopg://u:p@db/ytm",
        "YTM_KEY_PREFIX": "prod",
        "YTM_NODE": "gpubox",
        "YTM_GLOBAL_LIMIT": "4",
        "YTM_PER_USER_LIMIT": "2",
        "YTM_LEASE_TTL": "45.5",
        "YTM_HEARTBEAT_INTERVAL": "3",
        "YTM_STORAGE_FACTORY": "my_pkg.storage:make",
    }

    # When settings are built from them
    settings = Settings.from_env(environ)

    # Then each field has the parsed value and type
    assert settings.storage_root == tmp_path / "data"
    assert isinstance(settings.storage_root, Path)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.database_url == "postgresql+psycopg://u:p@db/ytm"
    assert settings.key_prefix == "prod"
    assert settings.node == "gpubox"
    assert settings.global_limit == 4
    assert settings.per_user_limit == 2
    assert settings.lease_ttl == 45.5
    assert settings.heartbeat_interval == 3.0
    assert settings.storage_factory == "my_pkg.storage:make"


def test_from_env_ignores_unset_and_empty_variables(tmp_path: Path) -> None:
    # Given an environment where a limit is set to the empty string and the rest is absent
    environ = {"YTM_GLOBAL_LIMIT": "", "YTM_STORAGE_ROOT": str(tmp_path)}

    # When settings are built
    settings = Settings.from_env(environ)

    # Then the defaults apply
    assert settings.global_limit is None
    assert settings.redis_url is None
    assert settings.lease_ttl == Settings().lease_ttl


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given a YTM_* variable in the process environment
    monkeypatch.setenv("YTM_KEY_PREFIX", "from-os")
    monkeypatch.setenv("YTM_STORAGE_ROOT", str(tmp_path))

    # When settings are built without an explicit mapping
    settings = Settings.from_env()

    # Then the variable is used
    assert settings.key_prefix == "from-os"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("YTM_GLOBAL_LIMIT", "four"),
        ("YTM_PER_USER_LIMIT", "1.5"),
        ("YTM_LEASE_TTL", "30s"),
        ("YTM_TICK_INTERVAL", "fast"),
    ],
)
def test_a_bad_number_raises_invalid_input_naming_the_variable(variable: str, raw: str) -> None:
    # Given a numeric variable that is not a number
    environ = {variable: raw}

    # When settings are built
    with pytest.raises(InvalidInput) as info:
        Settings.from_env(environ)

    # Then the message names the variable and its value
    assert variable in str(info.value)
    assert repr(raw) in str(info.value)


def test_keyword_overrides_win_over_the_environment(tmp_path: Path) -> None:
    # Given an environment that sets the prefix and the global limit
    environ = {"YTM_KEY_PREFIX": "env", "YTM_GLOBAL_LIMIT": "8", "YTM_STORAGE_ROOT": str(tmp_path / "env")}

    # When settings are built with keyword overrides for two of them
    settings = Settings.from_env(environ, key_prefix="kw", storage_root=tmp_path / "kw")

    # Then the overrides win and the rest comes from the environment
    assert settings.key_prefix == "kw"
    assert settings.storage_root == tmp_path / "kw"
    assert settings.global_limit == 8


def test_a_none_override_keeps_the_environment_value() -> None:
    # Given an environment with a redis url
    environ = {"YTM_REDIS_URL": "redis://env:6379/0"}

    # When settings are built with redis_url=None (an unset CLI option, say)
    settings = Settings.from_env(environ, redis_url=None)

    # Then the environment value stays
    assert settings.redis_url == "redis://env:6379/0"


@pytest.mark.parametrize(
    "settings_kwargs",
    [
        {},
        {
            "redis_url": "redis://r:6379/1",
            "database_url": "sqlite:////tmp/x.db",
            "key_prefix": "p",
            "node": "n1",
            "global_limit": 3,
            "per_user_limit": 1,
            "lease_ttl": 12.5,
            "heartbeat_interval": 1.25,
            "tick_interval": 0.5,
            "stop_grace": 7.0,
            "dispatch_timeout": 60.0,
            "visibility_timeout": 3600.0,
            "storage_factory": "pkg.mod:factory",
            "sandbox": "on",
            "child_memory": 8 << 30,
            "child_max_processes": 64,
        },
    ],
    ids=["defaults", "every-field"],
)
def test_to_env_round_trips_through_from_env(tmp_path: Path, settings_kwargs: dict[str, object]) -> None:
    # Given settings (as a parent process would hand to a child)
    original = Settings(storage_root=tmp_path, **settings_kwargs)  # type: ignore[arg-type]

    # When they are written to YTM_* variables and read back
    rebuilt = Settings.from_env(original.to_env())

    # Then the child has the same settings
    assert rebuilt == original


def test_to_env_writes_only_strings_and_skips_unset_fields(tmp_path: Path) -> None:
    # Given settings without a redis url
    settings = Settings(storage_root=tmp_path, redis_url=None, global_limit=2)

    # When they are turned into environment variables
    env = settings.to_env()

    # Then every value is a string and None fields are absent
    assert all(isinstance(v, str) for v in env.values())
    assert "YTM_REDIS_URL" not in env
    assert env["YTM_GLOBAL_LIMIT"] == "2"
    assert env["YTM_STORAGE_ROOT"] == str(tmp_path)


@pytest.mark.parametrize("field", ["global_limit", "per_user_limit"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "2"])
def test_a_limit_that_is_not_a_positive_integer_is_rejected(field: str, value: object) -> None:
    # Given a limit of zero, a negative, a float or a string
    # When settings are built with it
    with pytest.raises(InvalidInput) as info:
        Settings(**{field: value})  # type: ignore[arg-type]

    # Then InvalidInput names the field
    assert field in str(info.value)


def test_a_zero_global_limit_from_the_environment_is_rejected() -> None:
    # Given YTM_GLOBAL_LIMIT=0
    # When settings are built from the environment
    # Then InvalidInput is raised instead of a service that never runs anything
    with pytest.raises(InvalidInput, match="global_limit"):
        Settings.from_env({"YTM_GLOBAL_LIMIT": "0"})


def test_a_lease_shorter_than_four_heartbeats_is_rejected() -> None:
    # Given a lease too short for a child to be gone (silence_limit + save_wait) before it can expire
    # When settings are built
    # Then InvalidInput is raised
    with pytest.raises(InvalidInput, match="lease_ttl"):
        Settings(lease_ttl=7.0, heartbeat_interval=2.0)


def test_a_child_that_stops_hearing_its_worker_is_gone_before_the_lease_can_expire() -> None:
    # Given the default settings, and the shortest lease allowed for a heartbeat
    for settings in (Settings(), Settings(lease_ttl=4.0, heartbeat_interval=1.0)):
        # Then the last keep-alive, the child's silence and a save in progress fit strictly inside one lease
        assert settings.heartbeat_interval < settings.keep_alive_window
        assert settings.keep_alive_window + settings.silence_limit + settings.save_wait <= settings.lease_ttl
        assert settings.silence_limit > settings.heartbeat_interval  # a healthy worker's child never quits


def test_storage_root_is_made_absolute_and_derived_paths_live_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a relative storage root
    monkeypatch.chdir(tmp_path)

    # When settings are built
    settings = Settings(storage_root=Path("data"))

    # Then the root is absolute and the registry and pretrained folder are under it
    assert settings.storage_root == tmp_path / "data"
    assert settings.pretrained_dir == tmp_path / "data" / "_system" / "pretrained"
    assert settings.sql_url == f"sqlite:///{tmp_path / 'data' / '.ytm' / 'registry.db'}"


def test_an_explicit_database_url_replaces_the_sqlite_default(tmp_path: Path) -> None:
    # Given a PostgreSQL url
    settings = Settings(storage_root=tmp_path, database_url="postgresql+psycopg://db/ytm")

    # When the registry asks which database to open
    # Then it gets that url
    assert settings.sql_url == "postgresql+psycopg://db/ytm"


def test_replace_returns_changed_copy_and_leaves_the_original(tmp_path: Path) -> None:
    # Given settings
    original = Settings(storage_root=tmp_path, key_prefix="a")

    # When one field is replaced
    changed = original.replace(key_prefix="b")

    # Then only the copy changes, and settings stay immutable
    assert (original.key_prefix, changed.key_prefix) == ("a", "b")
    with pytest.raises(AttributeError):
        original.key_prefix = "c"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1073741824", 1 << 30), ("512M", 512 << 20), ("8G", 8 << 30), ("8g", 8 << 30), ("2GiB", 2 << 30),
     ("1T", 1 << 40)],
)  # fmt: skip
def test_child_memory_reads_bytes_or_a_size_with_a_unit(raw: str, expected: int) -> None:
    # Given YTM_CHILD_MEMORY as an operator writes it
    # When settings are built from the environment
    settings = Settings.from_env({"YTM_CHILD_MEMORY": raw})

    # Then the limit is in bytes, K, M, G and T being powers of 1024 as in Docker
    assert settings.child_memory == expected


@pytest.mark.parametrize("raw", ["8 gigs", "1.5G", "-1G", "G"])
def test_a_child_memory_that_is_no_size_raises_invalid_input_naming_it(raw: str) -> None:
    # Given a YTM_CHILD_MEMORY that is not a size
    # When settings are built
    with pytest.raises(InvalidInput) as info:
        Settings.from_env({"YTM_CHILD_MEMORY": raw})

    # Then the message names the variable and its value
    assert "YTM_CHILD_MEMORY" in str(info.value) and repr(raw) in str(info.value)


def test_the_sandbox_defaults_to_unset_with_512_processes_and_no_memory_limit() -> None:
    # Given no sandbox settings
    # When settings are built from an empty environment
    settings = Settings.from_env({})

    # Then the mode is left to the process ("on" for a worker, "auto" embedded), and only processes are capped
    assert (settings.sandbox, settings.child_memory, settings.child_max_processes) == (None, None, 512)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"sandbox": "maybe"}, "sandbox"), ({"child_memory": 0}, "child_memory"),
     ({"child_max_processes": -1}, "child_max_processes")],
)  # fmt: skip
def test_a_bad_sandbox_setting_is_rejected(changes: dict[str, object], field: str) -> None:
    # Given a sandbox mode that does not exist, or a limit that is not positive
    # When settings are built with it
    # Then InvalidInput names the field
    with pytest.raises(InvalidInput, match=field):
        Settings(**changes)  # type: ignore[arg-type]


def test_the_repr_of_settings_never_shows_credentials() -> None:
    # Given settings whose URLs carry passwords
    settings = Settings(redis_url="redis://:hunter2@h/0", database_url="postgresql+psycopg://u:s3cret@h/db")

    # When they are shown (a log line, a traceback's locals)
    shown = repr(settings)

    # Then neither password appears, and the URLs are still there to use
    assert "hunter2" not in shown and "s3cret" not in shown
    assert settings.redis_url == "redis://:hunter2@h/0"


def test_redis_patience_and_sse_keepalive_come_from_the_environment_and_must_be_positive() -> None:
    # Given YTM_REDIS_PATIENCE and YTM_SSE_KEEPALIVE
    settings = Settings.from_env({"YTM_REDIS_PATIENCE": "120", "YTM_SSE_KEEPALIVE": "2.5"})

    # Then they are read as seconds, the defaults are documented ones, and nonsense is refused with the name
    assert (settings.redis_patience, settings.sse_keepalive) == (120.0, 2.5)
    assert (Settings().redis_patience, Settings().sse_keepalive) == (60.0, 15.0)
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(InvalidInput, match="redis_patience"):
            Settings(redis_patience=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="sse_keepalive"):
            Settings(sse_keepalive=bad)  # type: ignore[arg-type]
