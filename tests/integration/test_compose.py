"""The deployment files: what `docker-compose config` resolves ``docker-compose.yml`` to, and the Dockerfile.

``docker-compose config`` (Debian's ``docker-compose`` package, compose v1.29) resolves anchors, merge keys
and ``${VAR:-default}`` without a Docker engine, so these tests run on any machine that has the binary.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"

EXPECTED_SERVICES = {
    "redis",
    "postgres",
    "flower",
    "metrics",
    "worker-gpu0",
    "worker-gpu1",
    "worker-cpu",
}
SHARED_SETTINGS = ("YTM_REDIS_URL", "YTM_DATABASE_URL", "YTM_STORAGE_ROOT", "YTM_NODE")


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The services of docker-compose.yml as `docker-compose config` resolves them, with default variables."""
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (apt-get install -y docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YTM_", "COMPOSE_", "POSTGRES_"))}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose config rejected the file:\n{result.stderr}"
    resolved = yaml.safe_load(result.stdout)
    return resolved["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def device_of(service: dict[str, Any]) -> str | None:
    """The value of ``--device`` in a service's command, or None."""
    command = command_of(service)
    for i, part in enumerate(command):
        if part == "--device" and i + 1 < len(command):
            return command[i + 1]
        if part.startswith("--device="):
            return part.split("=", 1)[1]
    return None


def gpu_reservations(service: dict[str, Any]) -> list[dict[str, Any]]:
    resources = service.get("deploy", {}).get("resources", {})
    return list(resources.get("reservations", {}).get("devices", []))


def mounts_of(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(source, target) of each volume; compose v1 prints ``src:dst:mode``, v2 a mapping."""
    mounts = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts.add((source, target))
    return mounts


def ytm_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services running our image (its entrypoint is `ytm`): the ones compose builds."""
    return {name: s for name, s in services.items() if "build" in s}


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in ytm_services(services).items() if command_of(s)[:1] == ["worker"]}


def dockerfile_env(text: str) -> dict[str, str]:
    """Every ``ENV`` assignment in a Dockerfile (both ``ENV K=V K2=V2`` and legacy ``ENV K V``)."""
    joined = re.sub(r"\\\n", " ", text)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "ENV":
            continue
        if "=" in words[1]:
            env.update(word.split("=", 1) for word in words[1:])
        else:
            env[words[1]] = " ".join(words[2:])
    return env


def dockerfile_instruction(text: str, name: str) -> str | None:
    """The argument of the last ``name`` instruction (the one that takes effect)."""
    found = re.findall(rf"^\s*{name}\s+(.+?)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    return found[-1] if found else None


# ---------------------------------------------------------------------------- compose


def test_compose_defines_the_broker_registry_monitor_and_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given docker-compose.yml as compose resolves it
    # When a user lists its services
    names = set(services)
    # Then redis, postgres, flower, two GPU workers and a CPU worker are all there
    assert names >= EXPECTED_SERVICES, f"missing: {sorted(EXPECTED_SERVICES - names)}"


def test_each_gpu_worker_reserves_exactly_the_gpu_its_command_names(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given the workers whose command asks for a CUDA device
    gpu_workers = {n: s for n, s in workers(services).items() if str(device_of(s)).startswith("cuda:")}
    assert {"worker-gpu0", "worker-gpu1"} <= set(gpu_workers)

    for name, service in gpu_workers.items():
        # When we read the GPU reservation compose will hand to Docker
        reservations = gpu_reservations(service)
        # Then it is one nvidia GPU request, for exactly the index after `cuda:`
        index = str(device_of(service)).split(":", 1)[1]
        assert len(reservations) == 1, f"{name}: {reservations}"
        (reservation,) = reservations
        assert reservation.get("driver") == "nvidia", name
        assert "gpu" in reservation.get("capabilities", []), name
        assert [str(i) for i in reservation.get("device_ids", [])] == [index], name
        assert "count" not in reservation, f"{name}: count would hand it more than its own GPU"

    # And no two workers are given the same GPU
    claimed = [str(i) for s in gpu_workers.values() for r in gpu_reservations(s) for i in r["device_ids"]]
    assert len(claimed) == len(set(claimed)), claimed
    assert device_of(services["worker-gpu0"]) == "cuda:0"
    assert device_of(services["worker-gpu1"]) == "cuda:1"


def test_cpu_worker_reserves_no_gpu(services: dict[str, dict[str, Any]]) -> None:
    # Given the CPU worker
    worker = services["worker-cpu"]
    # When we read its command and its device reservations
    device, reservations = device_of(worker), gpu_reservations(worker)
    # Then it runs on the CPU and holds no GPU
    assert device == "cpu"
    assert reservations == []


def test_workers_and_flower_share_the_data_volume_and_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given every worker and flower
    consumers = {**workers(services), "flower": services["flower"]}
    assert {"worker-gpu0", "worker-gpu1", "worker-cpu"} <= set(consumers)

    for name, service in consumers.items():
        # When we look at where its artifacts go
        # Then the named volume ytm-data is mounted at /data
        assert ("ytm-data", "/data") in mounts_of(service), name

    # And they all point at the same Redis, registry, storage root and node name
    settings = {name: {k: s["environment"].get(k) for k in SHARED_SETTINGS} for name, s in consumers.items()}
    first = next(iter(settings.values()))
    assert all(value is not None for value in first.values()), first
    assert all(s == first for s in settings.values()), settings
    assert first["YTM_STORAGE_ROOT"] == "/data"
    assert first["YTM_REDIS_URL"].startswith("redis://redis:")
    assert first["YTM_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:" in first["YTM_DATABASE_URL"]


def test_postgres_keeps_its_own_volume(services: dict[str, dict[str, Any]]) -> None:
    # Given the postgres service
    # When we read its mounts
    sources = {source for source, _ in mounts_of(services["postgres"])}
    # Then its data lives on a volume of its own, not on the shared artifact volume
    assert ("postgres-data", "/var/lib/postgresql/data") in mounts_of(services["postgres"])
    assert "ytm-data" not in sources


def test_redis_persists_queued_tasks_with_appendonly(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given the redis service
    # When we read the command it starts with
    command = command_of(services["redis"])
    # Then the append-only file is on, so queued tasks survive a restart
    assert "--appendonly" in command
    assert command[command.index("--appendonly") + 1] == "yes"


def test_ytm_services_start_only_after_redis_and_postgres_are_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given redis and postgres, which both declare a healthcheck
    assert services["redis"].get("healthcheck", {}).get("test")
    assert services["postgres"].get("healthcheck", {}).get("test")

    for name, service in ytm_services(services).items():
        # When we read what the service waits for
        depends_on = service.get("depends_on", {})
        # Then it waits until both are healthy
        for dependency in ("redis", "postgres"):
            assert depends_on.get(dependency, {}).get("condition") == "service_healthy", name


def test_every_ytm_command_in_the_compose_file_parses(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given the CLI parser the image's `ytm` entrypoint uses
    from yolo_task_manager.cli import build_parser

    commands = {name: command_of(s) for name, s in ytm_services(services).items()}
    assert {"flower", "metrics", "worker-gpu0", "worker-gpu1", "worker-cpu"} <= set(commands)

    for name, command in commands.items():
        # When it parses the command compose would pass to `ytm`
        try:
            build_parser().parse_args(command)
        except SystemExit as exc:
            # Then (on failure) the user sees which service has a command `ytm` rejects
            pytest.fail(f"{name}: `ytm {shlex.join(command)}` is rejected by the CLI (exit {exc.code})")


# ---------------------------------------------------------------------------- Dockerfile


def test_image_runs_ultralytics_offline() -> None:
    # Given the Dockerfile
    text = DOCKERFILE.read_text()
    # When we collect the environment it bakes into the image
    env = dockerfile_env(text)
    # Then ultralytics neither downloads assets nor pip-installs missing packages
    assert env.get("YOLO_OFFLINE") == "1"
    assert env.get("YOLO_AUTOINSTALL") == "0"


def test_image_runs_ytm_as_a_non_root_user() -> None:
    # Given the Dockerfile
    text = DOCKERFILE.read_text()
    # When we read the user and entrypoint it ends with
    user, entrypoint = (
        dockerfile_instruction(text, "USER"),
        dockerfile_instruction(text, "ENTRYPOINT"),
    )
    # Then the container runs `ytm` (so compose commands are ytm subcommands) and not as root
    assert entrypoint is not None and yaml.safe_load(entrypoint) == ["ytm"]
    assert user is not None and user.split(":")[0] not in {"root", "0"}


def test_image_installs_every_export_format_and_can_build_from_a_wheelhouse() -> None:
    # Given the Dockerfile's install step
    text = DOCKERFILE.read_text()
    install = next(line for line in text.splitlines() if "&& pip install" in line)
    # Then it installs the ONNX and OpenVINO export extras, and pip reads only the wheelhouse when given one
    extras = install.split("[", 1)[1].split("]", 1)[0].split(",")
    assert {"postgres", "onnx", "openvino"} <= set(extras)
    assert "ARG WHEELHOUSE" in text and "--no-index --find-links" in text


def test_flower_keeps_its_history_on_its_own_volume_and_asks_for_a_login(services: dict[str, dict[str, Any]]) -> None:
    # Given the Flower service as compose resolves it
    flower = services["flower"]
    env = flower["environment"]
    # Then it is persistent, its database lies on a volume of its own, and its login comes from the environment
    assert env["FLOWER_PERSISTENT"] == "true"
    mounts = {str(v).split(":")[1] if isinstance(v, str) else v["target"]: v for v in flower["volumes"]}
    assert env["FLOWER_DB"].startswith("/flower/") and "/flower" in mounts
    assert "FLOWER_BASIC_AUTH" in env
