"""Secrets never shown: not in an error, a log line, the CLI's output, nor any command line ``ps`` shows.

Each test plants the password ``hunter2`` in a URL that fails, and looks for it everywhere a person could.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.conftest import http_server
from yolo_task_manager import BrokerUnavailable, InvalidInput, Settings, YoloTaskManager, YoloTaskManagerError
from yolo_task_manager.broker.embedded import EmbeddedRedis, free_port
from yolo_task_manager.broker.local_worker import LocalWorker
from yolo_task_manager.redact import RedactingFilter, mask_url, redact
from yolo_task_manager.registry import Registry
from yolo_task_manager.storage import LocalFileSystemStorage

SECRET = "hunter2"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis") / "redis").start()
    yield server
    server.stop()


def dead_redis_url() -> str:
    return f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"


def dead_postgres_url() -> str:
    return f"postgresql+psycopg://ytm:{SECRET}@127.0.0.1:{free_port()}/ytm"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def ytm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "yolo_task_manager.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def clean_env(root: Path, **ytm_vars: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YTM_", "FLOWER_", "CELERY_"))}
    return {**env, "YTM_STORAGE_ROOT": str(root), **ytm_vars}


# -- masking ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h/0", "redis://:***@h/0"),
        ("rediss://default:pw@cache.example:6380/1", "rediss://default:***@cache.example:6380/1"),
        ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:***@h/db"),
        ("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://:p@ss/w:rd@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("host:pw", "***"),
    ],
)
def test_mask_url_hides_the_password_and_nothing_else(url: str, shown: str) -> None:
    # Given a URL with or without a password (unencoded '@' and '/' in one of them)
    # When it is masked
    # Then the password is gone and the rest, the part a person needs to find the server, stays
    assert mask_url(url) == shown


def test_redact_masks_every_url_with_credentials_in_a_text() -> None:
    # Given a message with two URLs and a libpq connection string
    text = f"cannot reach redis://:{SECRET}@r:6379/0 ('postgresql://u:{SECRET}@db/x'); dsn host=db password={SECRET}"

    # When it is redacted
    masked = redact(text)

    # Then no password is left, and the hosts are
    assert SECRET not in masked
    assert "redis://:***@r:6379/0" in masked and "postgresql://u:***@db/x" in masked and "password=***" in masked


def test_the_log_filter_masks_the_message_its_arguments_and_the_exception() -> None:
    # Given a logger whose handler has the filter, and records that carry a URL in each place
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test.secrets.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        # When a message, an argument and an exception each hold the password
        log.warning(f"connecting to redis://:{SECRET}@h/0")
        log.warning("connecting to %s", f"postgresql://u:{SECRET}@h/db")
        try:
            raise ConnectionError(f"lost redis://:{SECRET}@h/0")
        except ConnectionError:
            log.exception("the worker failed")
    finally:
        log.removeHandler(handler)

    # Then every line says what happened, without the password
    assert len(records) == 3 and not any(SECRET in r for r in records)
    assert "redis://:***@h/0" in records[0] and "postgresql://u:***@h/db" in records[1]
    assert "ConnectionError: lost redis://:***@h/0" in records[2]


def test_a_process_we_own_masks_its_logs_and_its_uncaught_traceback() -> None:
    # Given a process that installs the redaction, as the CLI and the workers do, then logs and crashes
    code = (
        "import logging; from yolo_task_manager.redact import install_redaction; install_redaction(); "
        "logging.basicConfig(); url = 'redis://:' + 'hunter' + '2@h/0'; "
        "logging.getLogger('celery.worker.consumer').error('Cannot connect to %s', url); raise RuntimeError(url)"
    )

    # When it runs
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    # Then both the log line and the traceback are there, masked
    assert out.returncode == 1
    assert "Cannot connect to redis://:***@h/0" in out.stderr and "RuntimeError: redis://:***@h/0" in out.stderr
    assert SECRET not in out.stderr + out.stdout


# -- wrong URLs ------------------------------------------------------------------------------------------


def test_a_wrong_redis_url_fails_without_showing_its_password(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # Given a Redis URL with a password, where no server listens
    caplog.set_level(logging.DEBUG)
    url = dead_redis_url()

    # When a producer is created on it
    with pytest.raises(BrokerUnavailable) as info:
        YoloTaskManager(LocalFileSystemStorage(tmp_path), redis_url=url)

    # Then the error says which server, masked, and neither it nor any log line holds the password
    assert mask_url(url) in str(info.value) and SECRET not in str(info.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url", [f"redis://:{SECRET}@127.0.0.1:notaport/0", f"http://:{SECRET}@h/0", f"redis://:{SECRET}@[::1/0"]
)
def test_a_malformed_redis_url_is_invalid_input_without_its_password(tmp_path: Path, url: str) -> None:
    # Given a Redis URL that is not one
    # When a producer is created on it
    with pytest.raises(InvalidInput) as info:
        YoloTaskManager(LocalFileSystemStorage(tmp_path), redis_url=url)

    # Then it says what a Redis URL looks like, and not the password
    assert "is not a Redis URL" in str(info.value) and "redis://" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_wrong_redis_password_fails_without_showing_it(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    # Given the right server and a wrong password
    url = f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0"

    # When a producer is created on it
    with pytest.raises(BrokerUnavailable) as info:
        YoloTaskManager(LocalFileSystemStorage(tmp_path), redis_url=url)

    # Then Redis's refusal is reported, masked
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_wrong_postgresql_url_fails_without_showing_its_password(
    redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a working Redis and a PostgreSQL URL with a password, where no server listens
    caplog.set_level(logging.DEBUG)
    url = dead_postgres_url()

    # When a producer (and a bare registry) is created on it
    with pytest.raises(BrokerUnavailable) as info:
        YoloTaskManager(LocalFileSystemStorage(tmp_path), redis_url=redis_server.url, database_url=url)
    with pytest.raises(BrokerUnavailable) as direct:
        Registry(url)

    # Then both errors name the database, masked, and nothing shows the password
    for error in (info.value, direct.value):
        assert mask_url(url) in str(error) and "Connection refused" in str(error) and SECRET not in str(error)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://u:{SECRET}@127.0.0.1:notaport/db",
        f"nosuchdb://u:{SECRET}@h/db",
        f"postgresql+nosuchdriver://u:{SECRET}@h/db",
        f"u:{SECRET}@h/db",
    ],
)
def test_a_malformed_database_url_is_invalid_input_without_its_password(url: str) -> None:
    # Given a database URL that SQLAlchemy cannot use
    # When a registry is opened on it
    with pytest.raises(InvalidInput) as info:
        Registry(url)

    # Then it says what to pass instead, and not the password
    assert "postgresql+psycopg://user:password@host/db" in str(info.value) and SECRET not in str(info.value)


# -- the CLI ---------------------------------------------------------------------------------------------


def test_the_cli_never_prints_a_password(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    # Given wrong Redis and PostgreSQL URLs with passwords in the environment
    dead_db = clean_env(tmp_path, YTM_REDIS_URL=dead_redis_url(), YTM_DATABASE_URL=dead_postgres_url())
    dead_redis = clean_env(tmp_path, YTM_REDIS_URL=dead_redis_url())
    malformed = clean_env(tmp_path, YTM_REDIS_URL=f"redis://:{SECRET}@h:notaport/0")

    # When an operator lists runs, reads a run's log and stops a run
    results = [
        ytm("runs", "--user", "a", "--json", env=dead_db),
        ytm("runs", "--user", "a", env=dead_db),
        ytm("logs", "--user", "a", "0" * 32, env=dead_redis),
        ytm("stop", "--user", "a", "0" * 32, "--json", env=malformed),
    ]

    # Then each fails with the documented exit code and a message naming the server, never the password
    assert [r.returncode for r in results] == [4, 4, 4, 1], [r.stderr for r in results]
    assert "cannot open the registry database postgresql+psycopg://ytm:***@" in results[0].stderr
    assert "cannot reach Redis at redis://:***@127.0.0.1" in results[2].stderr
    assert "is not a Redis URL" in results[3].stderr
    for result in results:
        assert SECRET not in result.stdout + result.stderr


# -- processes we start ----------------------------------------------------------------------------------


def test_the_embedded_redis_has_a_random_password_in_a_private_file_and_listens_on_loopback(
    redis_server: EmbeddedRedis,
) -> None:
    # Given the embedded Redis server
    password = redis.Redis.from_url(redis_server.url).connection_pool.connection_kwargs["password"]
    assert password and len(password) >= 32

    # When a person looks at its process, its files, and knocks without the password
    assert redis_server.process is not None
    shown = cmdline(redis_server.process.pid)
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as knock:
        knock.sendall(b"PING\r\n")
        answer = knock.recv(200)
    bound = redis.Redis.from_url(redis_server.url).config_get("bind")["bind"]
    listeners = {line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if
                 line.split()[3] == "0A" and line.split()[1].endswith(f":{redis_server.port:04X}")}  # fmt: skip
    listeners6 = [line for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]
                  if line.split()[1].endswith(f":{redis_server.port:04X}")]  # fmt: skip

    # Then the password is in no command line, only in a file its owner alone reads; a client without it is
    # refused; and the server listens on 127.0.0.1 alone
    assert password not in shown and "requirepass" not in shown
    assert password in redis_server.config_path.read_text()
    assert redis_server.config_path.stat().st_mode & 0o777 == 0o600
    assert redis_server.data_dir.stat().st_mode & 0o777 == 0o700
    assert answer.startswith(b"-NOAUTH")
    assert bound == "127.0.0.1" and listeners == {f"0100007F:{redis_server.port:04X}"} and listeners6 == []


def test_the_embedded_redis_keeps_its_password_across_a_restart(tmp_path: Path) -> None:
    # Given an embedded Redis with a value stored, and a client holding its URL
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    try:
        client.set("k", "v")

        # When it is stopped and started again
        server.stop()
        server.start()

        # Then the same URL still works (workers started before hold it) and the value is there
        assert client.get("k") == b"v"
    finally:
        client.close()
        server.stop()


def test_a_local_worker_that_fails_shows_no_password(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    # Given settings whose registry URL is wrong, as an embedded worker would get them
    settings = Settings(storage_root=tmp_path, redis_url=redis_server.url, database_url=dead_postgres_url(),
                        key_prefix="secrets")  # fmt: skip

    password = redis_server.url.split("@")[0].rsplit(":", 1)[1]

    # When the manager's local worker is started on them
    worker = LocalWorker(settings, "cpu")
    with pytest.raises(YoloTaskManagerError) as info:
        worker.start(timeout=120)

    # Then the error quotes the worker's last line, which names the database without its password; the
    # worker's log holds neither password
    assert "cannot open the registry database postgresql+psycopg://ytm:***@" in str(info.value)
    log = worker.log_path.read_text()
    assert SECRET not in str(info.value) and SECRET not in log and password not in log


@pytest.mark.slow
def test_ytm_flower_takes_its_broker_url_and_login_from_the_environment(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # Given the settings of a deployment whose Redis has a password, and a Flower login
    port = free_port()
    env = clean_env(tmp_path, YTM_REDIS_URL=redis_server.url, FLOWER_BASIC_AUTH=f"ops:{SECRET}")
    password = redis_server.url.split("@")[0].rsplit(":", 1)[1]

    # When `ytm flower` serves on loopback
    cmd = [sys.executable, "-m", "yolo_task_manager.cli", "flower", "--port", str(port)]
    with http_server(cmd, env, f"http://127.0.0.1:{port}/api/workers", 401) as proc:
        shown = cmdline(proc.pid)
        anonymous = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        logged_in = httpx.get(f"http://127.0.0.1:{port}/api/workers", auth=("ops", SECRET), timeout=30)

    # Then Flower runs, asks for the login, and neither password is on its command line
    assert "celery" in shown and "flower" in shown
    assert password not in shown and SECRET not in shown and "--broker" not in shown and "--basic-auth" not in shown
    assert anonymous.status_code == 401 and logged_in.status_code == 200


def test_ytm_flower_refuses_to_serve_the_network_without_a_login(redis_server: EmbeddedRedis, tmp_path: Path):
    # Given no FLOWER_BASIC_AUTH, or a malformed one
    env = clean_env(tmp_path, YTM_REDIS_URL=redis_server.url)

    # When Flower is asked to listen on every interface
    started = time.monotonic()
    bare = ytm("flower", "--address", "0.0.0.0", "--port", str(free_port()), env=env)
    malformed = ytm("flower", "--port", str(free_port()), env={**env, "FLOWER_BASIC_AUTH": "justaname"})

    # Then it does not start, and says what to set
    assert bare.returncode == 1 and "set FLOWER_BASIC_AUTH=user:password" in bare.stderr
    assert malformed.returncode == 1 and "FLOWER_BASIC_AUTH must be user:password" in malformed.stderr
    assert time.monotonic() - started < 60


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_no_process_the_embedded_default_starts_has_a_password_on_its_command_line(tmp_path: Path) -> None:
    # Given the single-machine default: its own Redis and worker
    with YoloTaskManager(LocalFileSystemStorage(tmp_path / "root"), default_device="cpu",
                         settings=Settings(storage_root=tmp_path / "root", key_prefix="embedded")) as mgr:  # fmt: skip
        password = mgr.settings.redis_url.split("@")[0].rsplit(":", 1)[1]  # type: ignore[union-attr]

        # When a person lists the processes it started
        shown = {pid: cmdline(pid) for pid in children_of(os.getpid())}

    # Then redis-server and the worker are there, and no command line holds the password
    assert any("redis-server" in c for c in shown.values()) and any(" worker " in c for c in shown.values()), shown
    assert not [c for c in shown.values() if password in c]
