"""The dispatch policy, pure: which waiting runs go to which free queues, within the limits, fairly.

Runs wait in the registry, not in Celery queues, so that the order is fair; a run is sent to a device's
queue only when that device is free, so a Celery queue never holds more than one run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from yolo_task_manager.devices import device_matches, gpu_first
from yolo_task_manager.values import Run

__all__ = ["jain_index", "plan_dispatch", "requests_served_by"]


def plan_dispatch(
    *,
    pending: Sequence[Run],
    active: Sequence[Run],
    free_queues: Sequence[str],
    last_turn: Mapping[str, int],
    global_limit: int | None,
    per_user_limit: int | None,
) -> list[tuple[Run, str]]:
    """Pair waiting runs with free queues: round robin across users, GPUs first, each run on a device it allows.

    Args:
        pending: waiting runs, oldest first (the dispatcher passes the first few of the first users in the ring).
        active: runs dispatched or running; they count against the limits.
        free_queues: queues with a live, idle worker.
        last_turn: for each user, the turn of their last dispatch; the user served longest ago goes first.
    """
    per_user = Counter(r.user_id for r in active)
    total = len(active)
    waiting: dict[str, list[Run]] = defaultdict(list)
    for run in pending:
        waiting[run.user_id].append(run)
    free = gpu_first(free_queues)
    turns = dict(last_turn)
    turn = max(turns.values(), default=0)
    plan: list[tuple[Run, str]] = []
    while free and (global_limit is None or total < global_limit):
        users = [u for u, runs in waiting.items() if runs and (per_user_limit is None or per_user[u] < per_user_limit)]
        users.sort(key=lambda u: (turns.get(u, 0), waiting[u][0].created_at))
        choice = next(
            ((run, q) for u in users for run in waiting[u] for q in free if device_matches(run.device, q)), None
        )
        if choice is None:
            break
        run, queue = choice
        plan.append(choice)
        free.remove(queue)
        waiting[run.user_id].remove(run)
        per_user[run.user_id] += 1
        total += 1
        turn += 1
        turns[run.user_id] = turn
    return plan


def requests_served_by(queue: str) -> frozenset[str]:
    """Every device request that ``devices.device_matches`` lets run on ``queue``: what the registry filters on."""
    served = {"auto", queue}
    if queue.startswith("cpu."):
        served.add("cpu")
    elif queue.startswith("gpu."):
        served.update({"cuda", f"cuda:{queue.rsplit('.', 1)[1]}"})
    return frozenset(served)


def jain_index(counts: Sequence[float]) -> float:
    """Jain's fairness index of a share per user: 1 when all are equal, 1/n when one user has everything."""
    if not counts or not any(counts):
        return 1.0
    return sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts))
