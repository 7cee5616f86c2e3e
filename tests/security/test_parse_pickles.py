"""Checkpoints are parsed as data: hand-built pickles for each gadget class are refused without running, and
every real checkpoint still passes.

Each gadget writes a canary file when a real loader unpickles it; ``test_the_gadgets_are_live`` (slow) shows
that torch.load really does, so the refusals below refuse something real.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.pickles import MAX_PICKLE_BYTES, check_checkpoint

REPO = Path(__file__).resolve().parents[2]
LEAKY = ("torch.nn.modules.activation", "LeakyReLU")


class P:
    """A protocol 4 pickle written opcode by opcode (see ``pickletools``)."""

    def __init__(self) -> None:
        self.data = bytearray(b"\x80\x04")

    def op(self, code: bytes) -> P:
        self.data += code
        return self

    def str(self, text: str) -> P:
        raw = text.encode()
        return self.op(
            b"\x8c" + bytes([len(raw)]) + raw if len(raw) < 256 else b"X" + len(raw).to_bytes(4, "little") + raw
        )

    def stack_global(self, module: str, name: str) -> P:  # protocol 4: "a.b" in name is resolved by getattr
        return self.str(module).str(name).op(b"\x93")

    def glob(self, module: str, name: str) -> P:  # protocols 0-3
        return self.op(f"c{module}\n{name}\n".encode())

    def value(self, obj: object) -> P:
        """A plain value (dicts, lists, strings, numbers), as protocol 2 writes it (no frames)."""
        return self.op(pickle.dumps(obj, protocol=2)[2:-1])

    def int(self, n: int) -> P:
        return self.op(b"J" + n.to_bytes(4, "little", signed=True))

    def call(self, build_args: Callable[[P], P], n: int) -> P:
        """Push args (``n`` of them) as a tuple and REDUCE the callable below them."""
        build_args(self)
        return self.op({0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}[n]).op(b"R")

    def system(self, command: str) -> P:
        """posix.system(command), what every gadget below ends with."""
        return self.glob("posix", "system").call(lambda p: p.str(command), 1)

    def bytes(self) -> bytes:
        return bytes(self.data + b".")


def _touch(canary: Path) -> str:
    return f"touch {canary}"


def _gadgets(canary: Path) -> dict[str, tuple[bytes, str]]:
    """name: (pickle, what the refusal must say)."""
    cmd = f"__import__('os').system('touch {canary}')"
    return {
        # dotted names that walk from an allowed class to eval
        "builtins-through-a-layer": (
            P().stack_global("torch.nn.modules.conv", "Conv2d.__init__.__builtins__.get")
            .call(lambda p: p.str("eval"), 1).call(lambda p: p.str(cmd), 1).bytes(),
            "refers to torch.nn.modules.conv.Conv2d.__init__.__builtins__.get",
        ),
        "os-through-a-module": (
            P().stack_global("torch.nn.modules.conv", "os.system").call(lambda p: p.str(_touch(canary)), 1).bytes(),
            "refers to torch.nn.modules.conv.os.system",
        ),
        "globals-of-an-ultralytics-layer": (
            P().stack_global("ultralytics.nn.modules", "Conv.__init__.__globals__").bytes(),
            "refers to ultralytics.nn.modules.Conv.__init__.__globals__",
        ),
        "a-method-of-an-allowed-class": (
            P().stack_global("pathlib", "PosixPath.touch")
            .call(lambda p: p.glob("pathlib", "PosixPath").call(lambda q: q.str(str(canary)), 1), 1).bytes(),
            "refers to pathlib.PosixPath.touch",
        ),
        # builtins that call anything
        "builtins.eval": (
            P().glob("builtins", "eval").call(lambda p: p.str(cmd), 1).bytes(),
            "refers to builtins.eval",
        ),
        "builtins.getattr": (
            P().glob("builtins", "getattr")
            .call(lambda p: p.glob("builtins", "__import__").call(lambda q: q.str("os"), 1).str("system"), 2)
            .call(lambda p: p.str(_touch(canary)), 1).bytes(),
            "refers to builtins.getattr",
        ),
        # allowed names used in ways torch never writes (each is followed by a payload a real load would reach)
        "a-layer-called-with-arguments": (
            P().glob("torch.nn.modules.conv", "Conv2d").call(lambda p: p.int(1).int(1).int(1), 3).op(b"0")
            .system(_touch(canary)).bytes(),
            "calls torch.nn.modules.conv.Conv2d (a layer), which an ultralytics checkpoint never calls",
        ),
        "a-layer-created-with-arguments": (
            P().glob("torch.nn.modules.conv", "Conv2d").int(1).op(b"\x85\x81").op(b"0").system(_touch(canary)).bytes(),
            "creates torch.nn.modules.conv.Conv2d with arguments",
        ),
        "OrderedDict-called-with-arguments": (
            P().glob("collections", "OrderedDict").call(lambda p: p.op(b"]"), 1).op(b"0")
            .system(_touch(canary)).bytes(),
            "calls collections.OrderedDict with",
        ),
        "reconstructor-running-an-init": (
            P().glob("copyreg", "_reconstructor")
            .call(lambda p: p.glob(*LEAKY).glob(*LEAKY).int(3), 3)  # LeakyReLU.__init__(obj, 3) runs
            .op(b"0").system(_touch(canary)).bytes(),
            "calls copyreg._reconstructor with",
        ),
        "state-set-on-a-class": (
            P().glob("torchvision.transforms.transforms", "Compose").op(b"N}").str("__call__")
            .glob("collections", "OrderedDict").op(b"s\x86b0").system(_touch(canary)).bytes(),
            "sets the state of torchvision.transforms.transforms.Compose",
        ),
        "a-module-with-a-forward-hook": (
            P().glob("torch.nn.modules.conv", "Conv2d").op(b")\x81}").str("_forward_hooks").op(b"}").int(0)
            .glob("pathlib", "PosixPath").op(b"ssb0").system(_touch(canary)).bytes(),
            "gives torch.nn.modules.conv.Conv2d _forward_hooks",
        ),
        "a-tensor-with-backward-hooks": (
            P().glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
            .op(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(1).op(b"tQ")
            .int(0).int(1).op(b"\x85").int(1).op(b"\x85").op(b"\x89")
            .glob("collections", "OrderedDict").op(b")R").int(0).glob("pathlib", "PosixPath").op(b"s")
            .op(b"tR0").system(_touch(canary)).bytes(),
            "calls torch._utils._rebuild_tensor_v2 with",
        ),
        "a-model-whose-yaml-calls-torch_load": (
            P().glob("ultralytics.nn.tasks", "DetectionModel").op(b")\x81")
            .value({"yaml": {"backbone": [[-1, 1, "torch_load", [str(canary)]]], "head": [[-1, 1, "Detect", ["nc"]]]}})
            .op(b"b").bytes(),
            "(the model yaml it embeds): module 'torch_load' is not a layer",
        ),
        # a gadget hidden deep in plain containers
        "nested-in-containers": (
            P().op(b"}").str("model").op(b"](").int(1).op(b"}").str("a").system(_touch(canary)).op(b"stas").bytes(),
            "refers to posix.system",
        ),
    }  # fmt: skip


def _checkpoint(path: Path, payload: bytes, *, entries: list[tuple[str, bytes]] | None = None) -> Path:
    """A zip laid out as torch.save writes one (with one 4-byte storage, for the tensor gadget)."""
    default = [("archive/data.pkl", payload), ("archive/byteorder", b"little"), ("archive/data/0", b"\0" * 4),
               ("archive/version", b"3\n")]  # fmt: skip
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries or default:
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("name", list(_gadgets(Path("/x"))))
def test_each_gadget_is_refused_without_running(tmp_path: Path, name: str) -> None:
    # Given a checkpoint whose pickle is the gadget
    canary = tmp_path / "canary"
    payload, complaint = _gadgets(canary)[name]
    evil = _checkpoint(tmp_path / "evil.pt", payload)

    # When it is checked
    with pytest.raises(InvalidInput) as info:
        check_checkpoint(evil)

    # Then it is refused, saying what it would do, and nothing ran
    assert complaint in str(info.value)
    assert not canary.exists()


def test_the_pickle_torch_would_load_is_the_one_checked(tmp_path: Path) -> None:
    # Given: the zip's first entry puts torch's archive at "b/", while a harmless "a/data.pkl" comes first
    canary = tmp_path / "canary"
    evil = P().system(_touch(canary)).bytes()
    entries = [("b/version", b"3\n"), ("a/data.pkl", P().op(b"}").bytes()), ("b/data.pkl", evil)]
    mixed = _checkpoint(tmp_path / "mixed.pt", b"", entries=entries)
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile says so, and writes both
        twice = _checkpoint(
            tmp_path / "twice.pt", b"", entries=[("a/data.pkl", P().op(b"}").bytes()), ("a/data.pkl", evil)]
        )

    # When / Then
    with pytest.raises(InvalidInput, match="refers to posix.system"):
        check_checkpoint(mixed)
    with pytest.raises(InvalidInput, match="same name twice"):
        check_checkpoint(twice)
    assert not canary.exists()


def test_a_pickle_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (MAX_PICKLE_BYTES + 1))
    with pytest.raises(InvalidInput, match="larger than 64 MiB"):
        check_checkpoint(big)
    assert not canary.exists()


REAL = [
    FIXTURES / "weights" / "third_party" / "yolo11n-cls_mnist160_babymelvin.pt",
]


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_checkpoints_pass(path: Path) -> None:
    assert check_checkpoint(path) is None


@pytest.mark.slow
def test_checkpoints_ultralytics_writes_pass_base_resumable_and_every_task(tmp_path: Path) -> None:
    # Given: checkpoints this ultralytics writes (a base model per task, and a last.pt mid-training)
    code = f"""
import shutil, sys
from pathlib import Path
from ultralytics import YOLO
out = Path({str(tmp_path)!r})
for name in ("yolov8n.yaml", "yolov8n-cls.yaml", "yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolov8n-obb.yaml",
             "yolo11n.yaml", "yolo26n.yaml"):
    YOLO(name).save(str(out / name.replace(".yaml", ".pt")))
"""
    env = _offline_env(tmp_path)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)

    # When / Then: each passes
    made = sorted(tmp_path.glob("*.pt"))
    assert len(made) == 7
    for path in made:
        assert check_checkpoint(path) is None, path


@pytest.mark.slow
def test_the_gadgets_are_live(tmp_path: Path) -> None:
    # Given: each gadget as a checkpoint, and a canary per gadget
    # (not the two that name what this install lacks or that run later, when ultralytics builds the model)
    static = ("globals-of-an-ultralytics-layer", "os-through-a-module", "a-model-whose-yaml-calls-torch_load")
    names = [n for n in _gadgets(Path("/x")) if n not in static]
    cases = {}
    for name in names:
        canary = tmp_path / f"canary-{name}"
        cases[name] = (str(_checkpoint(tmp_path / f"{name}.pt", _gadgets(canary)[name][0])), str(canary))

    # When torch.load (as ultralytics calls it, weights_only=False) loads each in a fresh interpreter
    code = (
        "import json, sys, torch\n"
        "for name, (path, canary) in json.loads(sys.argv[1]).items():\n"
        "    try: torch.load(path, map_location='cpu', weights_only=False)\n"
        "    except Exception as exc: print(name, type(exc).__name__, exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], env=_offline_env(tmp_path),
                            capture_output=True, text=True, timeout=300)  # fmt: skip

    # Then every gadget wrote its canary: the checks above refuse attacks that work
    missing = [name for name, (_, canary) in cases.items() if not Path(canary).exists()]
    assert missing == [], result.stdout + result.stderr


def _offline_env(scratch: Path) -> dict[str, str]:
    from yolo_task_manager.workers.offline import offline_env

    return {**offline_env(os.environ, scratch / "scratch"), "PYTHONPATH": str(REPO)}
