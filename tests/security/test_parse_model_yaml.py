"""A tenant's model yaml is data: ultralytics' parse_model would eval its activation and look its module names
up in a namespace holding torch_load and friends, so anything but its own layers and plain values is refused
before ultralytics sees the file, naming the file and the line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yolo_task_manager.api_client.validation import resolve_base_model
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.model_yaml import allowed_modules, check_model_config, check_model_yaml

_SPEC = importlib.util.find_spec("ultralytics")
assert _SPEC is not None and _SPEC.submodule_search_locations
SHIPPED = sorted((Path(next(iter(_SPEC.submodule_search_locations))) / "cfg" / "models").rglob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]
TINY = """nc: 2
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 0], 1, Detect, [nc]]
"""


def _yaml(tmp_path: Path, text: str, name: str = "net.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_model_yaml_ultralytics_ships_passes(path: Path) -> None:
    # Given a yaml from ultralytics' own cfg/models
    # When it is checked as a tenant's file would be
    config = check_model_yaml(path)

    # Then it passes, whole
    assert config["backbone"] and config["head"]


def test_a_yaml_whose_activation_would_run_a_command_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    # Given: the activation is Python that ultralytics would eval(): it would touch the canary
    canary = tmp_path / "CANARY"
    evil = _yaml(tmp_path, f"activation: __import__('os').system('touch {canary}')\n" + TINY)

    # When
    with pytest.raises(InvalidInput) as info:
        resolve_base_model(str(evil), tmp_path / "pretrained")

    # Then the file and line 1 are named, the excerpt is escaped and short, and nothing ran
    message = str(info.value)
    assert message.startswith(f"{evil} line 1: activation '__import__(\\'os\\').system(")
    assert "only ultralytics' own layers and plain values" in message
    assert not canary.exists()


@pytest.mark.parametrize(
    ("row", "complaint"),
    [
        ("[-1, 1, torch_load, ['/root/bob/models/m/model.pt']]", "module 'torch_load' is not a layer"),
        ("[-1, 1, os.system, ['touch CANARY']]", "module 'os.system' is not a layer"),
        ("[-1, 1, builtins.eval, ['1']]", "module 'builtins.eval' is not a layer"),
        ("[-1, 1, __builtins__, []]", "module '__builtins__' is not a layer"),
        ("[-1, 1, nn.modules.conv.os.system, ['touch CANARY']]", "is not a layer"),
        ("[-1, 1, torchvision.ops.deform_conv2d, []]", "is not a layer"),
        ("[-1, 1, DetectionModel, ['/root/bob/net.yaml']]", "module 'DetectionModel' is not a layer"),
        ("[-1, 1, Conv, [\"__import__('os').system('touch CANARY')\"]]", "is not a plain word or literal"),
        ("[-1, 1, Conv, [d]]", "names a variable of ultralytics' model builder"),
        ("[-1, 1, Conv, [{a: 1}]]", "is not a number, a word"),
        ("[-1, 1, Conv, [.inf]]", "is not a number, a word"),
        ("[-1, 1, Conv, ['1e999']]", "is not a number, a word"),
        ("[-1, 1.5, Conv, [16]]", "repeats '1.5'"),
        ("[x, 1, Conv, [16]]", "'from' 'x'"),
    ],
    ids=lambda v: v[:28],
)
def test_module_names_and_arguments_that_ultralytics_would_resolve_as_code_are_refused(
    tmp_path: Path, row: str, complaint: str
) -> None:
    # Given: a yaml whose fourth line holds the row
    canary = tmp_path / "CANARY"
    evil = _yaml(tmp_path, TINY.replace("  - [-1, 1, Conv, [32, 3, 2]]", f"  - {row}"))

    # When
    with pytest.raises(InvalidInput) as info:
        check_model_yaml(evil)

    # Then
    assert f"{evil} line 4: " in str(info.value) and complaint in str(info.value)
    assert not canary.exists()


@pytest.mark.parametrize(
    "activation",
    ["nn.SiLU()", "nn.ReLU()", "torch.nn.ReLU()", "nn.LeakyReLU(0.1)", "nn.LeakyReLU(0.1, inplace=True)", "nn.GELU()"],
)
def test_plain_activations_pass(tmp_path: Path, activation: str) -> None:
    assert check_model_yaml(_yaml(tmp_path, f"activation: {activation}\n" + TINY))["activation"] == activation


@pytest.mark.parametrize(
    "activation",
    ["nn.Module()", "nn.SiLU(); import os", "nn.LeakyReLU(x)", "eval('1')", "nn.SiLU", "nn.ReLU(inplace=os)"],
)
def test_other_activations_are_refused(tmp_path: Path, activation: str) -> None:
    with pytest.raises(InvalidInput, match="line 1: activation"):
        check_model_yaml(_yaml(tmp_path, f"activation: {activation!r}\n" + TINY))


@pytest.mark.timeout(20)
def test_a_billion_laughs_model_yaml_is_refused_fast(tmp_path: Path) -> None:
    # Given: 1 KiB of yaml whose head expands to 10**9 rows
    lines = ["a: &a [[-1, 1, Conv, [16]], [-1, 1, Conv, [16]], [-1, 1, Conv, [16]]]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    bomb = _yaml(tmp_path, "\n".join([*lines, "backbone: *i", "head: *i"]) + "\n")

    # When / Then
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="expands to more than"):
        check_model_yaml(bomb)
    assert time.monotonic() - started < 1.0


def test_a_model_dict_without_a_file_is_checked_the_same(tmp_path: Path) -> None:
    # Given the dict a checkpoint embeds as its model's yaml, with a forbidden module
    config = {"nc": 2, "backbone": [[-1, 1, "Conv", [16]]], "head": [[-1, 1, "torch_load", ["x.pt"]]]}

    # When / Then
    with pytest.raises(InvalidInput, match=r"^checkpoint: module 'torch_load' is not a layer"):
        check_model_config(config, "checkpoint")


def test_the_dicts_ultralytics_itself_builds_pass() -> None:
    # Given a pose model's dict as ultralytics passes it on (the dataset's kpt_shape as a tuple, channels set)
    config = check_model_yaml(next(p for p in SHIPPED if p.name == "yolo11-pose.yaml"))
    config.update(kpt_shape=(5, 2), nc=1, channels=3, scale="n", yaml_file="yolo11n-pose.yaml")

    # When / Then
    assert check_model_config(config, "yolo11n-pose.yaml") is None


def test_the_allowed_names_come_from_ultralytics_sources_without_importing_it() -> None:
    # Given a fresh interpreter
    code = (
        "import sys; from yolo_task_manager.model_yaml import allowed_modules\n"
        "layers, torch_layers = allowed_modules()\n"
        "print(len(layers), 'Conv' in layers, 'Upsample' in torch_layers, 'torch_load' in layers)\n"
        "print(sorted(m for m in ('torch', 'ultralytics') if m in sys.modules))\n"
    )

    # When
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout

    # Then
    count, conv, upsample, torch_load = out.splitlines()[0].split()
    assert int(count) > 40 and (conv, upsample, torch_load) == ("True", "True", "False")
    assert out.splitlines()[1] == "[]"
    assert allowed_modules()[0] >= {"Conv", "C2f", "Detect", "Segment", "Classify", "SPPF", "Concat"}
