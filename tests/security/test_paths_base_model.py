"""A base model named by path is read only when it lies in the caller's own area (or the operator's folder):
another user's checkpoint or yaml answers exactly like a missing file, before a byte of it is read."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from yolo_task_manager.api_client.validation import resolve_base_model
from yolo_task_manager.errors import InvalidInput, WeightsUnavailable

CANARY = "bob-secret-activation-9d1e"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """bob has a checkpoint whose refusal would name what it calls, and a yaml whose refusal would quote it."""
    root = tmp_path / "root"
    (root / "alice").mkdir(parents=True)
    (root / "_system" / "pretrained").mkdir(parents=True)
    bob = root / "bob"
    bob.mkdir()
    with zipfile.ZipFile(bob / "best.pt", "w") as archive:
        archive.writestr("archive/data.pkl", f"\x80\x02cposix\nsystem\nX\x05\x00\x00\x00{CANARY[:5]}\x85R.".encode())
    (bob / "net.yaml").write_text(f"activation: {CANARY}\nbackbone: []\nhead: []\n")
    return root


def _message(root: Path, base_model: str) -> tuple[type, str]:
    with pytest.raises((WeightsUnavailable, InvalidInput)) as info:
        resolve_base_model(base_model, root / "_system" / "pretrained", area=root / "alice")
    assert CANARY not in str(info.value) and CANARY[:5] not in str(info.value)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("name", ["best.pt", "net.yaml"])
def test_bobs_file_reads_exactly_like_a_missing_one(root: Path, name: str) -> None:
    # Given bob's file, and the same name where nothing is
    bobs, nowhere = root / "bob" / name, root / "bob" / "gone" / name

    # When alice names each as her base model
    kind, message = _message(root, str(bobs))
    missing_kind, missing = _message(root, str(nowhere))

    # Then the error is the same, but for the path she typed
    assert kind is missing_kind
    assert message == missing.replace(str(nowhere), str(bobs)).replace(str(nowhere.parent), str(bobs.parent))


@pytest.mark.parametrize("name", ["best.pt", "net.yaml"])
def test_a_link_in_alices_area_to_bobs_file_reads_like_a_missing_one(root: Path, name: str) -> None:
    link = root / "alice" / name
    link.symlink_to(root / "bob" / name)
    kind, message = _message(root, str(link))
    assert kind is (WeightsUnavailable if name.endswith(".pt") else InvalidInput)
    assert "not on this machine" in message or "unknown model yaml" in message
