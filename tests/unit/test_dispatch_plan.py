"""``plan_dispatch``: which waiting runs go to which free queues, within the limits, fairly across users."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from yolo_task_manager.devices import normalize_device, queue_for_device
from yolo_task_manager.scheduling.policy import plan_dispatch
from yolo_task_manager.values import Run, RunStatus

_T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
_n = itertools.count()


def make_run(user_id: str, device: str = "auto") -> Run:
    """A waiting run; each call is created one second after the previous one."""
    n = next(_n)
    return Run(
        run_id=f"{user_id}-{n}",
        user_id=user_id,
        run_name=f"run-{n}",
        status=RunStatus.QUEUED,
        base_model="yolov8n.yaml",
        dataset_dir="/d",
        task="detect",
        epochs=3,
        device=device,
        hyp={},
        attempt=0,
        queue=None,
        created_at=_T0 + timedelta(seconds=n),
        dispatched_at=None,
        started_at=None,
        finished_at=None,
        reason=None,
        last_epoch=None,
        model_name=None,
        max_duration=None,
    )


def active_run(user_id: str, queue: str) -> Run:
    return replace(make_run(user_id), status=RunStatus.RUNNING, queue=queue, attempt=1)


def plan(
    pending: Sequence[Run],
    free: Sequence[str],
    *,
    active: Sequence[Run] = (),
    last_turn: Mapping[str, int] | None = None,
    global_limit: int | None = None,
    per_user_limit: int | None = None,
) -> list[tuple[Run, str]]:
    return plan_dispatch(
        pending=pending,
        active=active,
        free_queues=free,
        last_turn=last_turn or {},
        global_limit=global_limit,
        per_user_limit=per_user_limit,
    )


def users_of(result: list[tuple[Run, str]]) -> list[str]:
    return [run.user_id for run, _ in result]


QUEUES = ["gpu.n1.0", "gpu.n1.1", "gpu.n2.0", "cpu.n1", "cpu.n2"]


# ---------------------------------------------------------------------------- limits


@pytest.mark.parametrize("global_limit", [None, 1, 2, 3, 4, 7])
@pytest.mark.parametrize("per_user_limit", [None, 1, 2, 3])
@pytest.mark.parametrize("already_active", [0, 1, 2])
def test_limits_are_never_exceeded_and_free_queues_are_used_up_to_them(
    global_limit: int | None, per_user_limit: int | None, already_active: int
) -> None:
    # Given three users with four waiting runs each, some of alice's runs already active, five free queues
    pending = [make_run(user) for user in ("alice", "bob", "carol") for _ in range(4)]
    active = [active_run("alice", f"gpu.busy.{i}") for i in range(already_active)]

    # When a plan is made
    result = plan(pending, QUEUES, active=active, global_limit=global_limit, per_user_limit=per_user_limit)

    # Then the total and each user's count, active runs included, stay within the limits
    counts = Counter(users_of(result)) + Counter(r.user_id for r in active)
    if global_limit is not None:
        assert len(result) == 0 or len(result) + len(active) <= global_limit
    if per_user_limit is not None:
        assert all(counts[user] <= per_user_limit for user in users_of(result))
    # And each queue and each run is used at most once
    assert len({q for _, q in result}) == len(result)
    assert len({r.run_id for r, _ in result}) == len(result)
    # And no free queue is left idle unless a limit says so
    room_per_user = {u: 4 if per_user_limit is None else max(0, per_user_limit - n) for u, n in
                     {"alice": already_active, "bob": 0, "carol": 0}.items()}  # fmt: skip
    expected = min(len(QUEUES), sum(min(4, room) for room in room_per_user.values()))
    if global_limit is not None:
        expected = min(expected, max(0, global_limit - len(active)))
    assert len(result) == expected


def test_the_global_limit_counts_runs_already_active() -> None:
    # Given a global limit of 2 with one run already training
    pending = [make_run("alice"), make_run("bob"), make_run("carol")]

    # When a plan is made with four free queues
    result = plan(pending, QUEUES[:4], active=[active_run("dave", "gpu.x.0")], global_limit=2)

    # Then only one more run is sent
    assert len(result) == 1


def test_a_user_at_the_per_user_limit_waits_while_others_are_served() -> None:
    # Given alice already has one run active, per_user_limit=1, and both alice and bob wait
    pending = [make_run("alice"), make_run("alice"), make_run("bob")]

    # When a plan is made with three free queues
    result = plan(pending, QUEUES[:3], active=[active_run("alice", "gpu.x.0")], per_user_limit=1)

    # Then only bob's run is sent
    assert users_of(result) == ["bob"]


def test_the_global_limit_already_reached_gives_an_empty_plan() -> None:
    # Given two active runs and a global limit of 2
    active = [active_run("alice", "gpu.n1.0"), active_run("bob", "gpu.n1.1")]

    # When a plan is made with free queues and waiting runs
    # Then nothing is sent
    assert plan([make_run("carol")], ["cpu.n1"], active=active, global_limit=2) == []


# ---------------------------------------------------------------------------- fairness


def test_a_user_with_one_run_is_served_alongside_a_user_with_fifty() -> None:
    # Given alice queued 50 runs before bob queued one, and two queues are free
    pending = [make_run("alice") for _ in range(50)] + [make_run("bob")]

    # When a plan is made
    result = plan(pending, ["gpu.n1.0", "gpu.n1.1"])

    # Then bob gets one of the two queues
    assert sorted(users_of(result)) == ["alice", "bob"]


def test_users_take_turns_one_run_each() -> None:
    # Given three users with three runs each and six free queues
    pending = [make_run(user) for user in ("alice", "bob", "carol") for _ in range(3)]

    # When a plan is made
    result = plan(pending, [f"gpu.n1.{i}" for i in range(6)])

    # Then everyone gets a first run before anyone gets a second
    assert users_of(result) == ["alice", "bob", "carol", "alice", "bob", "carol"]


def test_a_users_runs_go_oldest_first() -> None:
    # Given alice's three waiting runs
    runs = [make_run("alice") for _ in range(3)]

    # When a plan is made with two free queues
    result = plan(runs, ["gpu.n1.0", "gpu.n1.1"])

    # Then her two oldest runs are sent
    assert {r.run_id for r, _ in result} == {runs[0].run_id, runs[1].run_id}


def test_the_user_served_longest_ago_goes_first() -> None:
    # Given alice was served at turn 5, bob at turn 3, and carol never
    pending = [make_run("alice"), make_run("bob"), make_run("carol")]
    last_turn = {"alice": 5, "bob": 3}

    # When plans are made with one, then three free queues
    one = plan(pending, ["gpu.n1.0"], last_turn=last_turn)
    three = plan(pending, ["gpu.n1.0", "gpu.n1.1", "gpu.n1.2"], last_turn=last_turn)

    # Then carol goes first, then bob, then alice
    assert users_of(one) == ["carol"]
    assert users_of(three) == ["carol", "bob", "alice"]


def test_among_users_never_served_the_oldest_waiting_run_goes_first() -> None:
    # Given bob's run was queued before alice's, neither served yet
    bobs = make_run("bob")
    alices = make_run("alice")

    # When one queue is free
    result = plan([alices, bobs], ["cpu.n1"])

    # Then bob's run goes
    assert users_of(result) == ["bob"]


# ---------------------------------------------------------------------------- devices


def test_a_run_pinned_to_cuda_1_never_takes_gpu_0() -> None:
    # Given a run that asked for cuda:1 and only GPU 0 and the CPU are free
    run = make_run("alice", "cuda:1")

    # When a plan is made
    # Then it waits
    assert plan([run], ["gpu.n1.0", "cpu.n1"]) == []
    # And once GPU 1 is free it takes that one
    assert plan([run], ["gpu.n1.0", "gpu.n1.1"]) == [(run, "gpu.n1.1")]


def test_auto_takes_a_gpu_before_the_cpu() -> None:
    # Given an "auto" run, with the CPU queue listed first
    run = make_run("alice", "auto")

    # When a plan is made
    # Then the run goes to the GPU
    assert plan([run], ["cpu.n1", "gpu.n1.0"]) == [(run, "gpu.n1.0")]


@pytest.mark.parametrize(
    ("device", "free", "expected"),
    [
        ("cpu", ["gpu.n1.0", "cpu.n1"], "cpu.n1"),
        ("cpu", ["gpu.n1.0"], None),
        ("cuda", ["cpu.n1", "gpu.n2.3"], "gpu.n2.3"),
        ("cuda", ["cpu.n1"], None),
        ("cuda:0", ["gpu.n1.1", "gpu.n2.0"], "gpu.n2.0"),
        ("gpu.n2.0", ["gpu.n1.0", "gpu.n2.0"], "gpu.n2.0"),
        ("gpu.n2.0", ["gpu.n1.0"], None),
        ("cpu.n2", ["cpu.n1", "cpu.n2"], "cpu.n2"),
    ],
)
def test_a_run_only_goes_to_a_queue_its_device_allows(device: str, free: list[str], expected: str | None) -> None:
    # Given a run with a device request
    run = make_run("alice", device)

    # When a plan is made
    result = plan([run], free)

    # Then it goes to the matching queue, or waits
    assert result == ([(run, expected)] if expected else [])


def test_no_free_queue_gives_an_empty_plan() -> None:
    # Given waiting runs and no free queue
    # When a plan is made
    # Then nothing is sent
    assert plan([make_run("alice"), make_run("bob")], []) == []


def test_no_waiting_run_gives_an_empty_plan() -> None:
    assert plan([], QUEUES) == []


def test_a_pinned_run_on_a_busy_device_does_not_block_another_users_run() -> None:
    # Given alice's older run is pinned to GPU 1 (busy), and bob's run may use any device
    alices = make_run("alice", "cuda:1")
    bobs = make_run("bob", "auto")

    # When only GPU 0 is free
    result = plan([alices, bobs], ["gpu.n1.0"])

    # Then bob's run takes it
    assert result == [(bobs, "gpu.n1.0")]


def test_a_pinned_run_does_not_block_the_same_users_next_run() -> None:
    # Given alice's oldest run is pinned to a busy GPU and her next one may use the CPU
    pinned = make_run("alice", "cuda:1")
    flexible = make_run("alice", "cpu")

    # When only the CPU is free
    # Then her second run goes
    assert plan([pinned, flexible], ["cpu.n1"]) == [(flexible, "cpu.n1")]


def test_the_plan_does_not_mutate_its_inputs() -> None:
    # Given inputs a caller keeps
    pending = [make_run("alice"), make_run("bob")]
    free = ["gpu.n1.0", "cpu.n1"]
    last_turn = {"alice": 1}

    # When a plan is made
    plan(pending, free, last_turn=last_turn)

    # Then they are unchanged
    assert len(pending) == 2
    assert free == ["gpu.n1.0", "cpu.n1"]
    assert last_turn == {"alice": 1}


def test_a_run_pinned_to_a_queue_on_an_upper_case_host_can_be_dispatched() -> None:
    # Given a worker for cuda:0 on host "GPUBOX", and a run pinned to that worker's queue by name
    queue = queue_for_device("cuda:0", "GPUBOX")
    run = make_run("alice", normalize_device(queue))

    # When that queue is free
    result = plan([run], [queue])

    # Then the run goes there
    assert result == [(run, queue)]
