"""Simulated hosts: two workers, each in a network namespace of its own, reach Redis over a veth pair; one
host is cut off in the middle of an epoch and the other resumes its run.

The namespaces are made with ``ip netns`` inside the test's own network namespace (``scripts/offline``):
each host gets a veth pair with a private /30, Redis listens on the host-side addresses and loopback only,
and the registry is SQLite in the shared storage root (the volume both hosts mount). Workers enter their
host's namespace with ``nsenter --net`` (which, unlike ``ip netns exec``, leaves /sys and its cgroups as
they are). Needs root and iproute2: skipped without them, failed under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import (
    Deployment,
    ProcessSampler,
    RedisServer,
    check_exactly_once,
    check_model_predicts,
    train_followed,
    training_children,
    wait_for,
)
from yolo_task_manager import RunStatus

EPOCHS = 8

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Host:
    """A network namespace joined to this one by a veth pair: ``outside`` is this side's end and address."""

    netns: str
    outside: str
    address: str
    """This side's address: what the host's workers connect to."""

    def cut(self) -> None:
        """Pull the host's cable: its veth goes down, packets to and from it are lost (no reset)."""
        _ip("link", "set", self.outside, "down")


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"simulated hosts: {why}")
    pytest.skip(f"simulated hosts need root and iproute2 (ip netns): {why}")


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    """Two simulated hosts, removed afterwards."""
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        _unavailable("ip or nsenter is missing")
    tag = uuid.uuid4().hex[:6]
    made: list[Host] = []
    try:
        os.makedirs("/run/netns", exist_ok=True)
        for i in (1, 2):
            netns, outside, inside = f"ytm{tag}h{i}", f"y{tag}o{i}", f"y{tag}i{i}"
            base = f"10.{200 + i}.{int(tag[:2], 16)}"
            _ip("netns", "add", netns)
            made.append(Host(netns, outside, f"{base}.1"))
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", netns)
            _ip("addr", "add", f"{base}.1/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("-n", netns, "addr", "add", f"{base}.2/30", "dev", inside)
            _ip("-n", netns, "link", "set", inside, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
    except OSError as exc:
        for host in made:
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        _unavailable(str(exc))
    yield made
    for host in made:
        subprocess.run(["ip", "link", "del", host.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)


@pytest.fixture
def hosts_redis(tmp_path: Path, hosts: list[Host]) -> Iterator[RedisServer]:
    """Redis on loopback and the hosts' side of each veth pair, nowhere else."""
    server = RedisServer(tmp_path / "redis", bind=("127.0.0.1", *(h.address for h in hosts))).start()
    yield server
    server.stop()


@pytest.fixture
def hosts_deployment(hosts_redis: RedisServer, template_checkpoint: Path, shared_dir: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:  # fmt: skip
    deploy = Deployment(tmp_path_factory.mktemp("root"), hosts_redis.url(), template_checkpoint, (shared_dir,))
    yield deploy
    deploy.close()


def test_a_host_cut_off_mid_epoch_has_its_run_resumed_on_the_other_host_once(
    hosts: list[Host], hosts_redis: RedisServer, hosts_deployment: Deployment, sampler: ProcessSampler,
    dataset: Path, image: Path,
) -> None:  # fmt: skip
    # Given: a worker on host 1 training an 8-epoch run, past its second epoch, and a worker on host 2
    one, two = hosts
    first = hosts_deployment.start_worker("host1", netns=one.netns, redis_url=hosts_redis.url(one.address))
    mgr = hosts_deployment.manager()
    followed = train_followed(mgr, "hal", dataset, EPOCHS, "nomad")
    sampler.watch(followed.run_id)
    followed.wait_for_epoch(2)
    hosts_deployment.start_worker("host2", netns=two.netns, redis_url=hosts_redis.url(two.address))
    assert mgr.get_run("hal", followed.run_id).queue == first.queue
    (cut_child,) = training_children([followed.run_id])[followed.run_id]

    # When: host 1 is cut off in the middle of an epoch
    wait_for(lambda: len(followed.epochs) >= 3, 60, "epoch 3")
    one.cut()
    try:
        # Then: its child stops training (its lease is gone), and host 2 resumes the run and completes it
        wait_for(lambda: not os.path.exists(f"/proc/{cut_child}") or _zombie(cut_child), 60,
                 "the cut-off host's training to quit")  # fmt: skip
        run = mgr.wait("hal", followed.run_id, timeout=180)
        sampler.stop()
    finally:
        first.kill()  # its Celery consumer may wait on a dead connection for minutes
    assert run.status is RunStatus.COMPLETED, run.reason
    assert run.queue == "cpu.host2"
    sampler.check_at_most_one(run.run_id, trainings=2)
    check_exactly_once(mgr, "hal", followed, EPOCHS)
    check_model_predicts(mgr, "hal", "nomad", image)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True
