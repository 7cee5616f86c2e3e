"""No user reaches another user's files through a path; export keys and option types."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_task_manager.api_client.inference import EXPORT_OPTIONS, check_options
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.ids import Area, check_access, resolve_inside
from yolo_task_manager.tasks.infer import export_key


def test_paths_in_another_users_area_are_refused(tmp_path: Path):
    root = tmp_path / "root"
    (root / "bob" / "models").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="not in the folder of user 'alice'"):
        check_access(root / "bob" / "models", root, "alice")
    with pytest.raises(InvalidInput):
        check_access(root / "alice" / ".." / "bob", root, "alice")  # resolved before it is checked
    with pytest.raises(InvalidInput):
        check_access(root / "pretrained" / "x.pt", root, "alice")


def test_own_area_and_allowed_areas_pass_and_other_paths_outside_the_root_do_not(tmp_path: Path):
    # Given a user's own folder, the operator's folders, and a path elsewhere on the machine
    root = tmp_path / "root"

    # Then the user's own and the allowed (shared) folders pass, resolved; anything else is refused
    assert check_access(root / "alice" / "data", root, "alice") == (root / "alice" / "data").resolve()
    assert check_access(root / "pretrained" / "x.pt", root, "alice", also=(root / "pretrained",))
    shared = tmp_path / "datasets"
    assert check_access(shared / "x", root, "alice", also=(shared,)) == (shared / "x").resolve()
    with pytest.raises(InvalidInput, match="not in the folder of user 'alice'"):
        check_access("/etc/passwd", root, "alice", also=(shared,))


def test_export_keys_are_readable_when_they_can_be_and_never_collide():
    assert export_key("onnx", {}) == "onnx"
    assert export_key("onnx", {"imgsz": 320}) == "onnx-imgsz-320"
    listed = export_key("onnx", {"imgsz": [320, 640]})
    assert listed.startswith("onnx-") and "[" not in listed
    long_a = export_key("openvino", {"dynamic": True, "batch": 8, "simplify": True, "opset": 17, "workspace": 4})
    long_b = export_key("openvino", {"dynamic": True, "batch": 8, "simplify": True, "opset": 17, "workspace": 8})
    assert long_a != long_b and len(long_a) <= 64


@pytest.mark.parametrize(("opts", "message"), [
    ({"imgsz": "big"}, "'imgsz' must be int or list or tuple"),
    ({"dynamic": 1}, "'dynamic' must be bool"),
    ({"opset": True}, "'opset' must be int"),
    ({"int8": True}, "unknown export option"),
])  # fmt: skip
def test_export_option_values_are_checked_before_anything_runs(opts, message):
    with pytest.raises(InvalidInput, match=message):
        check_options(opts, EXPORT_OPTIONS, "export")


# ---------------------------------------------------------------------------- resolve_inside


@pytest.fixture
def areas(tmp_path: Path) -> tuple[Path, Path]:
    """alice's and bob's areas under one root; bob has a file."""
    root = tmp_path / "root"
    (root / "alice" / "data").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / "bob" / "secret.txt").write_text("bob's")
    return root / "alice", root / "bob"


def test_a_path_inside_the_area_resolves_to_its_real_path(areas: tuple[Path, Path]) -> None:
    # Given a file in alice's area and a link to it inside her area
    alice, _ = areas
    (alice / "data" / "a.txt").write_text("a")
    (alice / "link").symlink_to(alice / "data")

    # When / Then: both resolve, to the real file
    assert resolve_inside(alice / "data" / "a.txt", alice) == (alice / "data" / "a.txt").resolve()
    assert resolve_inside(alice / "link" / "a.txt", alice) == (alice / "data" / "a.txt").resolve()
    assert resolve_inside("data/a.txt", alice) == (alice / "data" / "a.txt").resolve()


@pytest.mark.parametrize(
    "make",
    [
        lambda alice, bob: alice / ".." / "bob" / "secret.txt",
        lambda alice, bob: bob / "secret.txt",
        lambda alice, bob: _link(alice / "to-bob", bob) / "secret.txt",
        lambda alice, bob: _link(alice / "to-secret", bob / "secret.txt"),
        lambda alice, bob: _link(alice / "relative", Path("../bob/secret.txt")),
        lambda alice, bob: _link(alice / "via-root", Path("/")) / str(bob / "secret.txt").lstrip("/"),
    ],
    ids=["dot-dot", "absolute", "folder-link", "file-link", "relative-link", "link-to-root"],
)
def test_bobs_existing_file_and_a_missing_one_look_the_same_from_alices_area(make, areas) -> None:
    # Given a way out of alice's area to bob's file, and the same way to a file that does not exist
    alice, bob = areas
    found = make(alice, bob)
    missing = Path(str(found).replace("secret.txt", "nothing.txt"))

    # When both are resolved from alice's area
    entry, missing_entry = Area(alice).resolve(found), Area(alice).resolve(missing)

    # Then neither is reachable, and nothing tells them apart
    assert resolve_inside(found, alice) is None
    assert entry == missing_entry


def test_links_that_loop_are_refused(areas: tuple[Path, Path]) -> None:
    # Given two links pointing at each other
    alice, _ = areas
    _link(alice / "a", Path("b"))
    _link(alice / "b", Path("a"))

    # When / Then
    assert Area(alice).resolve(alice / "a").blocked
    assert resolve_inside(alice / "a", alice) is None


def test_a_missing_path_inside_is_absent_not_blocked(areas: tuple[Path, Path]) -> None:
    alice, _ = areas
    entry = Area(alice).resolve(alice / "data" / "none.txt")
    assert (entry.real, entry.blocked) == (None, False)


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path
