"""Device requests, worker queue names, and which queues a request may use."""

from __future__ import annotations

import pytest

from yolo_task_manager.devices import device_matches, normalize_device, queue_for_device
from yolo_task_manager.errors import InvalidInput


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (None, "auto"),
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("cpu", "cpu"),
        (" CPU ", "cpu"),
        ("cuda", "cuda"),
        ("gpu", "cuda"),
        ("GPU", "cuda"),
        (0, "cuda:0"),
        (1, "cuda:1"),
        ("0", "cuda:0"),
        ("3", "cuda:3"),
        ("cuda:0", "cuda:0"),
        ("CUDA:1", "cuda:1"),
        ("cuda:01", "cuda:1"),
        ("gpu.node1.0", "gpu.node1.0"),
        ("gpu.node-a_b.12", "gpu.node-a_b.12"),
        ("cpu.node1", "cpu.node1"),
    ],
)
def test_normalize_device_accepts_every_documented_spelling(device: str | int | None, expected: str) -> None:
    # Given a device request as a user may write it
    # When it is normalised
    # Then it becomes the canonical form
    assert normalize_device(device) == expected


@pytest.mark.parametrize(
    "device",
    ["", "tpu", "mps", "cuda:", "cuda:x", "cuda:-1", -1, "cuda:0,1", "0,1", "gpu.node1", "gpu.node1.a", "cpu.", "gpu."],
)
def test_an_unknown_device_raises_invalid_input_listing_the_choices(device: str | int) -> None:
    # Given a device string that names nothing this system knows
    # When it is normalised
    with pytest.raises(InvalidInput) as info:
        normalize_device(device)

    # Then the message shows the accepted forms
    assert "cuda:N" in str(info.value)


@pytest.mark.parametrize(
    ("device", "node", "queue"),
    [
        ("cpu", "n1", "cpu.n1"),
        ("cuda:0", "n1", "gpu.n1.0"),
        ("cuda:1", "box-2", "gpu.box-2.1"),
        (1, "n1", "gpu.n1.1"),
        ("2", "n1", "gpu.n1.2"),
    ],
)
def test_queue_for_device_names_the_queue_a_worker_consumes(device: str, node: str, queue: str) -> None:
    assert queue_for_device(device, node) == queue


@pytest.mark.parametrize("device", ["auto", "cuda", "gpu", None, "tpu"])
def test_a_worker_needs_one_concrete_device(device: str | None) -> None:
    # Given a device that is not one concrete device
    # When a worker queue is asked for it
    # Then InvalidInput is raised
    with pytest.raises(InvalidInput):
        queue_for_device(device, "n1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "queue", "expected"),
    [
        ("auto", "gpu.n1.0", True),
        ("auto", "cpu.n1", True),
        ("cpu", "cpu.n1", True),
        ("cpu", "cpu.n2", True),
        ("cpu", "gpu.n1.0", False),
        ("cuda", "gpu.n1.0", True),
        ("cuda", "gpu.n2.3", True),
        ("cuda", "cpu.n1", False),
        ("cuda:0", "gpu.n1.0", True),
        ("cuda:0", "gpu.n2.0", True),
        ("cuda:0", "gpu.n1.1", False),
        ("cuda:1", "gpu.n1.0", False),
        ("cuda:1", "gpu.n1.10", False),
        ("cuda:10", "gpu.n1.10", True),
        ("cuda:0", "cpu.n1", False),
        ("gpu.n1.0", "gpu.n1.0", True),
        ("gpu.n1.0", "gpu.n2.0", False),
        ("gpu.n1.0", "gpu.n1.1", False),
        ("cpu.n1", "cpu.n1", True),
        ("cpu.n1", "cpu.n2", False),
    ],
)
def test_device_matches_decides_which_queues_a_request_may_use(request_: str, queue: str, expected: bool) -> None:
    assert device_matches(request_, queue) is expected


@pytest.mark.parametrize(("device", "node"), [("cpu", "n1"), ("cuda:0", "n1"), ("cuda:3", "box-7")])
def test_a_request_for_a_workers_device_or_queue_matches_that_worker(device: str, node: str) -> None:
    # Given the queue of a worker for a device
    queue = queue_for_device(device, node)

    # When a run asks for that device, or for the queue by name
    # Then that worker may take it
    assert device_matches(normalize_device(device), queue)
    assert device_matches(normalize_device(queue), queue)


@pytest.mark.parametrize("queue", ["gpu.GPUBOX.0", "cpu.DESKTOP-7", "gpu.Node_a.3"])
def test_a_queue_name_keeps_the_case_of_its_node(queue: str) -> None:
    # Given the queue of a worker on a host whose name has capitals
    # When a run asks for that queue by name
    request = normalize_device(queue)

    # Then the request is that exact queue, so the worker may take it
    assert request == queue
    assert device_matches(request, queue)
