"""Producer-side checks: base model resolution, training arguments, epochs, durations and task fit.

Nothing here imports torch or ultralytics; ultralytics' shipped yaml files are read from its folder.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from yolo_task_manager.api_client.validation import (
    check_task_fits,
    parse_duration,
    resolve_base_model,
    validate_epochs,
    validate_hyp,
)
from yolo_task_manager.errors import InvalidInput, WeightsUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shared fixtures sit beside the checkout here, and inside it on the device machine.
SHARED = REPO_ROOT / "shared" if (REPO_ROOT / "shared").is_dir() else REPO_ROOT.parent / "shared"
WEIGHTS = SHARED / "fixtures" / "weights"
YOLOV5 = WEIGHTS / "yolov5n.pt"
THIRD_PARTY_CLS = WEIGHTS / "third_party" / "yolo11n-cls_mnist160_babymelvin.pt"


@pytest.fixture
def pretrained(tmp_path: Path) -> Path:
    folder = tmp_path / "pretrained"
    folder.mkdir()
    return folder


def _copy_fixture(src: Path, dst: Path) -> Path:
    """A private copy: /work/shared is never written, and the copy is writable so tmp_path can be removed."""
    if not src.is_file():
        pytest.fail(f"shared fixture {src} is missing")
    shutil.copyfile(src, dst)
    return dst


def _shipped_yaml(name: str) -> str:
    """The text of a model yaml ultralytics ships (read from its folder, without importing it)."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations
    return next(Path(next(iter(spec.submodule_search_locations))).glob(f"cfg/models/**/{name}")).read_text()


def _fake_checkpoint(path: Path, pickle_bytes: bytes) -> Path:
    """A zip laid out like a torch checkpoint, whose pickle mentions the given class names."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/version", "3\n")
    return path


# ---------------------------------------------------------------------------- base models: names and files


def test_a_missing_pt_raises_weights_unavailable_naming_the_pretrained_dir(pretrained: Path) -> None:
    # Given an empty pretrained folder (this system never downloads weights)
    # When a run asks for yolov8n.pt
    with pytest.raises(WeightsUnavailable) as info:
        resolve_base_model("yolov8n.pt", pretrained)

    # Then the message says where to copy the file, and suggests training from a yaml
    message = str(info.value)
    assert str(pretrained) in message
    assert "yolov8n.pt" in message
    assert ".yaml" in message


def test_weights_left_in_the_old_pretrained_folder_are_not_read_and_the_operator_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: yolov8n.pt still in {root}/pretrained/, where a user named "pretrained" could once have written
    legacy = tmp_path / "pretrained"
    legacy.mkdir()
    (legacy / "yolov8n.pt").write_bytes(b"old place")
    current = tmp_path / "_system" / "pretrained"
    current.mkdir(parents=True)

    # When it is resolved by name
    with pytest.raises(WeightsUnavailable) as info:
        resolve_base_model("yolov8n.pt", current)

    # Then the caller is told where weights go now, and the log tells the operator to move the old folder
    assert str(current) in str(info.value) and str(legacy) not in str(info.value)
    assert f"{legacy}, which is no longer read" in caplog.text and "mv" in caplog.text


def test_a_missing_absolute_pt_raises_weights_unavailable(tmp_path: Path, pretrained: Path) -> None:
    with pytest.raises(WeightsUnavailable):
        resolve_base_model(str(tmp_path / "elsewhere" / "best.pt"), pretrained)


@pytest.mark.parametrize("name", ["../x.pt", "a/b.pt", "./x.pt", ".hidden.pt", "..", "../../etc/x.yaml", ""])
def test_a_name_that_is_not_a_plain_file_name_is_rejected(name: str, pretrained: Path) -> None:
    # Given a relative name that could escape the pretrained folder, or nothing
    # When it is resolved
    # Then InvalidInput is raised (not WeightsUnavailable: no lookup is tried)
    with pytest.raises(InvalidInput):
        resolve_base_model(name, pretrained)


@pytest.mark.parametrize("value", [None, 8, Path("yolov8n.pt")])
def test_a_base_model_that_is_not_a_string_is_rejected(value: object, pretrained: Path) -> None:
    with pytest.raises(InvalidInput):
        resolve_base_model(value, pretrained)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["yolov8n.onnx", "yolov8n", "model.pth", "weights.engine"])
def test_a_file_that_is_neither_pt_nor_yaml_is_rejected(name: str, pretrained: Path) -> None:
    # Given the file exists, but it is not a checkpoint or a model yaml
    (pretrained / name).write_bytes(b"\0")

    # When it is resolved
    # Then InvalidInput says what is accepted
    with pytest.raises(InvalidInput, match=r"\.pt"):
        resolve_base_model(name, pretrained)


# ---------------------------------------------------------------------------- base models: yaml


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("yolov8n.yaml", "detect"),
        ("yolov8s.yaml", "detect"),
        ("yolov8n-seg.yaml", "segment"),
        ("yolov8n-cls.yaml", "classify"),
        ("yolov8n-pose.yaml", "pose"),
        ("yolov8n-obb.yaml", "obb"),
        ("yolo11n.yaml", "detect"),
        ("yolo11n-cls.yaml", "classify"),
        ("yolo11x-seg.yaml", "segment"),
        ("yolov8.yaml", "detect"),
        ("yolov8n-p2.yaml", "detect"),
    ],
)
def test_a_shipped_model_yaml_resolves_to_its_name_and_task(name: str, task: str, pretrained: Path) -> None:
    # Given a model yaml that ultralytics ships (scaled, like yolov8n, or not)
    # When it is resolved with nothing in the pretrained folder
    # Then it trains from scratch under its own name, with the task its name says
    assert resolve_base_model(name, pretrained) == (name, task)


@pytest.mark.parametrize("name", ["yolov99n.yaml", "my-net.yaml", "yolov8q.yaml", "yolov8n-bogus.yml"])
def test_an_unknown_yaml_raises_invalid_input(name: str, pretrained: Path) -> None:
    # Given a yaml name that neither ultralytics ships nor the pretrained folder holds
    # When it is resolved
    with pytest.raises(InvalidInput) as info:
        resolve_base_model(name, pretrained)

    # Then the message says where to put it
    assert str(pretrained) in str(info.value)


def test_a_yaml_in_the_pretrained_dir_is_used_by_path(pretrained: Path) -> None:
    # Given a custom segmentation model yaml in the pretrained folder
    (pretrained / "my-net-seg.yaml").write_text(_shipped_yaml("yolov8-seg.yaml").replace("nc: 80", "nc: 3"))

    # When it is resolved
    # Then its full path is used, with the task from its name
    assert resolve_base_model("my-net-seg.yaml", pretrained) == (str(pretrained / "my-net-seg.yaml"), "segment")


def test_an_absolute_yaml_that_does_not_exist_is_rejected(tmp_path: Path, pretrained: Path) -> None:
    # Given an absolute path to a missing yaml, even one named like a shipped model
    # When it is resolved
    # Then it is not silently replaced by ultralytics' own yolov8n.yaml
    with pytest.raises(InvalidInput):
        resolve_base_model(str(tmp_path / "yolov8n.yaml"), pretrained)


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("yolov8n-seg-p6.yaml", "segment"),
        ("yolov8n-pose-p6.yaml", "pose"),
        ("yolov8-cls-resnet50.yaml", "classify"),
        ("yolo11-cls-resnet18.yaml", "classify"),
    ],
)
def test_a_shipped_yaml_with_a_suffix_after_the_task_resolves_to_its_task(
    name: str, task: str, pretrained: Path
) -> None:
    # Given a shipped model yaml whose task marker is followed by a variant (-p6, -resnet50)
    # When it is resolved
    # Then its task is the model's task, so a classify dataset accepts a -cls-resnet model
    assert resolve_base_model(name, pretrained) == (name, task)


# ---------------------------------------------------------------------------- base models: checkpoints


def test_a_legacy_yolov5_checkpoint_is_rejected_with_a_yolov5_message(pretrained: Path) -> None:
    # Given the official YOLOv5n checkpoint, in the old format ultralytics 8 cannot load
    _copy_fixture(YOLOV5, pretrained / "yolov5n.pt")

    # When it is resolved
    with pytest.raises(InvalidInput) as info:
        resolve_base_model("yolov5n.pt", pretrained)

    # Then the message says it is a legacy YOLOv5 checkpoint and what to use instead
    assert "YOLOv5" in str(info.value)
    assert "yaml" in str(info.value)


def test_a_third_party_classification_checkpoint_resolves_as_classify(tmp_path: Path, pretrained: Path) -> None:
    # Given a classification checkpoint someone trained with ultralytics 8.3
    copied = _copy_fixture(THIRD_PARTY_CLS, pretrained / "mnist-cls.pt")

    # When it is resolved by name, and by absolute path from elsewhere
    by_name = resolve_base_model("mnist-cls.pt", pretrained)
    by_path = resolve_base_model(str(copied), tmp_path / "unused")

    # Then it is used from its path as a classify model
    assert by_name == (str(copied), "classify")
    assert by_path == (str(copied), "classify")


def test_a_checkpoint_that_would_run_code_is_refused_by_path_but_trusted_from_the_operators_folder(
    tmp_path: Path, pretrained: Path
) -> None:
    # Given the same crafted checkpoint (its pickle calls os.system) in a user's folder and in pretrained/
    pickle_bytes = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    elsewhere = tmp_path / "alice" / "evil.pt"
    elsewhere.parent.mkdir()
    _fake_checkpoint(elsewhere, pickle_bytes)
    _fake_checkpoint(pretrained / "vouched.pt", pickle_bytes)

    # When / Then: by path it is refused, naming the call and the folder an operator can vouch for it with
    with pytest.raises(InvalidInput, match=rf"refers to posix\.system.*copy it into {pretrained}/"):
        resolve_base_model(str(elsewhere), pretrained)
    assert resolve_base_model("vouched.pt", pretrained) == (str(pretrained / "vouched.pt"), "detect")


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04 truncated"])
def test_a_file_named_pt_that_is_not_a_checkpoint_is_rejected(content: bytes, pretrained: Path) -> None:
    # Given a text file, an empty file or a truncated zip named x.pt
    (pretrained / "x.pt").write_bytes(content)

    # When it is resolved
    # Then InvalidInput says it is not a PyTorch checkpoint
    with pytest.raises(InvalidInput, match="not a PyTorch checkpoint"):
        resolve_base_model("x.pt", pretrained)


def test_a_zip_without_a_pickle_is_rejected(pretrained: Path) -> None:
    # Given a zip archive that holds no data.pkl
    with zipfile.ZipFile(pretrained / "x.pt", "w") as archive:
        archive.writestr("readme.txt", "hello")

    # When it is resolved
    # Then it is refused as not a checkpoint
    with pytest.raises(InvalidInput, match="not a PyTorch checkpoint"):
        resolve_base_model("x.pt", pretrained)


@pytest.mark.parametrize(
    ("class_name", "task"),
    [
        (b"SegmentationModel", "segment"),
        (b"PoseModel", "pose"),
        (b"OBBModel", "obb"),
        (b"DetectionModel", "detect"),
        (b"ClassificationModel", "classify"),
    ],
)
def test_the_task_of_a_checkpoint_comes_from_its_model_class(class_name: bytes, task: str, pretrained: Path) -> None:
    # Given an ultralytics checkpoint whose pickled model is of the given class
    _fake_checkpoint(pretrained / "best.pt", b"\x80\x02cultralytics.nn.tasks\n" + class_name + b"\nq\x00.")

    # When it is resolved
    # Then the task follows the class
    assert resolve_base_model("best.pt", pretrained) == (str(pretrained / "best.pt"), task)


def test_resolving_never_imports_torch_or_ultralytics(tmp_path: Path) -> None:
    # Given a fresh interpreter
    code = (
        "import sys; from pathlib import Path\n"
        "from yolo_task_manager.api_client.validation import resolve_base_model, validate_hyp\n"
        "import yolo_task_manager\n"
        "resolve_base_model('yolov8n.yaml', Path(sys.argv[1])); validate_hyp({'lr0': 0.01})\n"
        "print(sorted(m for m in ('torch', 'ultralytics') if m in sys.modules))\n"
    )

    # When the package is imported and a yaml and hyp are validated
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)

    # Then neither heavy library was loaded (the producer stays light)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- hyp


def test_known_arguments_of_the_right_type_pass() -> None:
    hyp = {"lr0": 0.02, "imgsz": 320, "batch": 8, "patience": 5, "cos_lr": True, "optimizer": "SGD", "mosaic": 0}
    assert validate_hyp(hyp) == hyp


def test_an_unknown_argument_raises_with_a_suggestion() -> None:
    # Given a misspelt learning rate
    # When it is validated
    with pytest.raises(InvalidInput) as info:
        validate_hyp({"lr": 0.01})

    # Then the message names it and suggests lr0
    assert "'lr'" in str(info.value)
    assert "lr0" in str(info.value)


def test_an_unknown_argument_with_nothing_close_is_still_named() -> None:
    with pytest.raises(InvalidInput, match="zzzzqqq"):
        validate_hyp({"zzzzqqq": 1})


@pytest.mark.parametrize("key", ["data", "project", "save", "epochs", "name", "device", "resume", "model", "exist_ok"])
def test_arguments_the_manager_sets_itself_are_refused(key: str) -> None:
    # Given an argument that would break isolation or resume
    # When it is passed
    with pytest.raises(InvalidInput) as info:
        validate_hyp({key: "x"})

    # Then the message says it cannot be passed
    assert repr(key) in str(info.value)
    assert "cannot be passed" in str(info.value)


@pytest.mark.parametrize(
    "hyp",
    [{"lr0": "0.01"}, {"batch": "16"}, {"lr0": None}, {"patience": True}, {"amp": 1}, {"cos_lr": "yes"}],
    ids=["str-for-float", "str-for-int", "none-for-float", "bool-for-int", "int-for-bool", "str-for-bool"],
)
def test_a_value_of_the_wrong_type_is_refused(hyp: dict[str, object]) -> None:
    # Given a value whose type does not fit ultralytics' default
    # When it is validated
    # Then InvalidInput names the argument
    with pytest.raises(InvalidInput, match=next(iter(hyp))):
        validate_hyp(hyp)


@pytest.mark.parametrize("imgsz", [16, 0, -640, 31])
def test_an_image_size_below_32_is_refused(imgsz: int) -> None:
    with pytest.raises(InvalidInput, match="imgsz"):
        validate_hyp({"imgsz": imgsz})


def test_an_image_size_of_32_passes() -> None:
    assert validate_hyp({"imgsz": 32}) == {"imgsz": 32}


def test_validate_hyp_returns_a_copy() -> None:
    # Given a caller's dict
    hyp = {"lr0": 0.01}

    # When it is validated and the result changed
    checked = validate_hyp(hyp)
    checked["lr0"] = 1.0

    # Then the caller's dict is untouched
    assert hyp == {"lr0": 0.01}


# ---------------------------------------------------------------------------- epochs and durations


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True, False, "3", None, 10_001, 10**100])
def test_epochs_that_are_not_a_positive_integer_are_refused(epochs: object) -> None:
    with pytest.raises(InvalidInput, match="epochs"):
        validate_epochs(epochs)


@pytest.mark.parametrize("epochs", [1, 3, 300, 10_000])
def test_positive_integer_epochs_pass(epochs: int) -> None:
    assert validate_epochs(epochs) == epochs


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2h", 7200.0),
        ("30m", 1800.0),
        ("90s", 90.0),
        ("90", 90.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (" 2h ", 7200.0),
        (90, 90.0),
        (0.5, 0.5),
        (None, None),
    ],
)
def test_parse_duration_accepts_numbers_and_unit_strings(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["0", "0m", "abc", "", "-5", "2 hours", "5w", 0, -1, True, [60], float("nan"), float("inf"), "9" * 400, 10**400],
    ids=lambda v: repr(v)[:20],
)
def test_parse_duration_refuses_zero_negative_infinite_and_garbage(value: object) -> None:
    # Given a duration that is zero, negative or unreadable
    # When it is parsed
    # Then InvalidInput shows the accepted forms
    with pytest.raises(InvalidInput, match="max_duration"):
        parse_duration(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- task fit


@pytest.mark.parametrize(
    ("model_task", "dataset_task"),
    [
        ("detect", "detect"),
        ("classify", "classify"),
        ("segment", "segment"),
        ("pose", "pose"),
        ("obb", "obb"),
        ("detect", "segment"),
        ("detect", "obb"),
    ],
)
def test_a_model_fits_its_own_task_and_a_detector_fits_box_based_datasets(model_task: str, dataset_task: str) -> None:
    # Then no error: training may be queued
    assert check_task_fits(model_task, dataset_task, "base.pt") is None


@pytest.mark.parametrize(
    ("model_task", "dataset_task"),
    [
        ("detect", "classify"),
        ("classify", "detect"),
        ("segment", "detect"),
        ("pose", "detect"),
        ("detect", "pose"),
        ("obb", "detect"),
        ("segment", "classify"),
    ],
)
def test_a_model_that_cannot_train_on_the_dataset_is_refused(model_task: str, dataset_task: str) -> None:
    # Given a model and a dataset of incompatible tasks
    # When the fit is checked
    with pytest.raises(InvalidInput) as info:
        check_task_fits(model_task, dataset_task, "yolov8n-x.pt")

    # Then the message names the model and both tasks
    message = str(info.value)
    assert "'yolov8n-x.pt'" in message
    assert model_task in message and dataset_task in message


@pytest.mark.parametrize("value", ["31d", 31 * 86400, "745h", 2.6e6])
def test_parse_duration_refuses_more_than_30_days(value: object) -> None:
    with pytest.raises(InvalidInput, match="at most 30 days"):
        parse_duration(value)  # type: ignore[arg-type]


def test_parse_duration_accepts_30_days() -> None:
    assert parse_duration("30d") == 30 * 86400.0


@pytest.mark.parametrize(
    ("hyp", "complaint"),
    [
        ({"imgsz": 8193}, "32 to 8192"),
        ({"imgsz": [640, 9000]}, "32 to 8192"),
        ({"batch": 4097}, "1 to 4096"),
        ({"batch": 0}, "AutoBatch"),
        ({"batch": -2}, "AutoBatch"),
        ({"batch": 1.5}, "fraction of GPU memory"),
        ({"workers": 65}, "0 to 64"),
        ({"workers": -1}, "0 to 64"),
        ({"time": 721}, "at most 720 hours"),
        ({"lr0": float("nan")}, "finite"),
        ({"lr0": float("inf")}, "finite"),
        ({"lr0": 2.0}, "between 0 and 1"),
        ({"patience": 1.5}, "integer"),
        ({"lr0": {0.1}}, "not a set"),
        ({"optimizer": b"SGD"}, "not a bytes"),
        ({"optimizer": "../../bob/x"}, "plain word"),
        ({"pretrained": "/root/bob/models/m/model.pt"}, "must be one of"),
        ({"distill_model": "/root/bob/models/m/model.pt"}, "names a file to load"),
        ({"cache": "always"}, "must be one of"),
        ({"freeze": [1, {"a": 1}]}, "finite numbers"),
        ({"scale": [0.5, float("nan")]}, "finite numbers"),
        ({"lr0": [0.1, 0.2]}, "must be a number"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_hyp_values_out_of_bounds_or_of_the_wrong_kind_are_refused(hyp: dict[str, object], complaint: str) -> None:
    # Given a training argument out of its bounds, of a type it never takes, or naming a file
    # When it is validated
    with pytest.raises(InvalidInput) as info:
        validate_hyp(hyp)

    # Then the message names the argument and the rule
    assert repr(next(iter(hyp))) in str(info.value) and complaint in str(info.value)


@pytest.mark.parametrize(
    "hyp",
    [
        {"imgsz": 8192},
        {"imgsz": [320, 640]},
        {"batch": -1},
        {"batch": 0.7},
        {"batch": 4096},
        {"workers": 0},
        {"workers": 64},
        {"time": 1.5},
        {"cache": "ram"},
        {"cache": True},
        {"amp": "bf16"},
        {"pretrained": False},
        {"freeze": [0, "23.cv2"]},
        {"fraction": 0.5},
        {"scale": 0.5},
        {"close_mosaic": 0},
        {"seed": 7},
    ],
    ids=lambda v: str(v),
)
def test_hyp_values_within_ultralytics_rules_pass(hyp: dict[str, object]) -> None:
    assert validate_hyp(hyp) == hyp
