"""A model yaml (or the model dict a checkpoint embeds) checked as data before ultralytics builds it.

ultralytics' ``parse_model`` looks each layer's module name up with ``globals()[m]`` in
``ultralytics.nn.tasks`` (which also holds ``torch_load``, ``check_requirements``, ``pickle``...), ``eval()``s
``activation:``, and resolves string arguments through its own ``locals()``: a tenant's yaml could call any
of them. Here every module name must be a layer ultralytics exports (or an ``nn.X`` layer of torch), the
activation one of a few exact spellings, and every argument a plain literal. The names are read from the
installed sources with ``ast`` (cached), so the producer never imports torch or ultralytics.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from yolo_task_manager.datasets.files import MAX_DATA_YAML_BYTES, UnreadableFile, excerpt, load_yaml_nodes, read_capped
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.ids import resolve_inside

__all__ = ["ACTIVATIONS", "allowed_modules", "check_model_config", "check_model_yaml"]

ACTIVATIONS = frozenset(
    {"SiLU", "ReLU", "ReLU6", "LeakyReLU", "GELU", "Hardswish", "Hardsigmoid", "Mish", "ELU", "SELU", "CELU",
     "PReLU", "Sigmoid", "Tanh", "Identity", "Softplus"}
)  # fmt: skip
"""``activation:`` may be ``nn.<one of these>(...)`` (or ``torch.nn.``) with numbers and ``inplace=`` only."""
_NUMBER = r"-?\d+(?:\.\d*)?(?:[eE]-?\d+)?"
_ACTIVATION = re.compile(
    rf"(?:torch\.)?nn\.(?P<name>[A-Za-z0-9]+)\(\s*(?:{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*)?"
    r"(?:,?\s*inplace\s*=\s*(?:True|False)\s*)?\)"
)
_NAMES = frozenset({"nc", "kpt_shape", "reg_max", "end2end"})
"""``parse_model`` variables an argument may name (it passes the value): values read from the yaml itself."""
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_MAX_ROWS, _MAX_ARGS, _MAX_DEPTH = 1000, 64, 4
_NUMBERS = (int, float)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(f"{name} is not installed here: `pip install yolo-task-manager` installs it")
    return Path(next(iter(spec.submodule_search_locations)))


def _all_names(source: Path) -> set[str]:
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return {str(n) for n in ast.literal_eval(value)}
    return set()


@functools.cache
def allowed_modules() -> tuple[frozenset[str], frozenset[str]]:
    """(ultralytics layer names ``parse_model`` finds, ``torch.nn`` layer names it accepts as ``nn.X``)."""
    ultralytics = _package_dir("ultralytics")
    tasks = ast.parse((ultralytics / "nn" / "tasks.py").read_text(encoding="utf-8"))
    imported = {
        alias.asname or alias.name
        for node in tasks.body
        if isinstance(node, ast.ImportFrom) and node.module == "ultralytics.nn.modules"
        for alias in node.names
    }
    layers = frozenset(imported & _all_names(ultralytics / "nn" / "modules" / "__init__.py"))
    torch_layers = frozenset(
        n for n in _all_names(_package_dir("torch") / "nn" / "modules" / "__init__.py") if n[:1].isupper()
    )
    return layers, torch_layers


def check_model_yaml(path: str | Path, *, area: str | Path | None = None) -> dict[str, Any]:
    """Read a model yaml as bounded, safe YAML and check it as ``check_model_config`` does; return its dict.

    Args:
        area: when given, the file must resolve inside it (a foreign file reads as a missing one).

    Raises:
        InvalidInput: unreadable, too big, or naming anything ultralytics would run rather than build;
            the message names the file and the line.
    """
    real = resolve_inside(path, area) if area is not None else Path(path)
    if real is None:
        raise InvalidInput(f"model yaml {excerpt(str(path))[1:-1]} does not exist: check the path")
    source = str(path)
    try:
        raw = read_capped(str(real), MAX_DATA_YAML_BYTES, "model yaml")
    except UnreadableFile as exc:
        raise InvalidInput(f"model yaml {excerpt(source)[1:-1]} {exc.reason}") from None
    config, node = load_yaml_nodes(raw, source)
    check_model_config(config, source, node)
    return dict(config)


def check_model_config(config: object, source: str, node: yaml.Node | None = None) -> None:
    """Raise ``InvalidInput`` unless ``config`` is a model dict ultralytics builds without running anything.

    ``node`` (the YAML node tree, when the dict came from a file) lets the message give the line.
    """
    if not isinstance(config, Mapping):
        raise InvalidInput(f"{source} must be a mapping with backbone and head: fix its top level")
    layers, torch_layers = allowed_modules()

    def refuse(where: tuple[Any, ...], problem: str) -> InvalidInput:
        line = _line(node, where)
        at = f" line {line}" if line else ""
        return InvalidInput(f"{source}{at}: {problem}: only ultralytics' own layers and plain values can be used")

    act = config.get("activation")
    if act not in (None, False) and not (isinstance(act, str) and _activation_ok(act)):
        raise refuse(("activation",), f"activation {excerpt(act)} is not one of nn.{', nn.'.join(sorted(ACTIVATIONS))}")
    _check_numbers(config, refuse)
    scales = config.get("scales")
    if scales is not None:
        ok = isinstance(scales, Mapping) and all(
            isinstance(k, str) and len(k) <= 8 and isinstance(v, list) and len(v) == 3 and all(_finite(x) for x in v)
            for k, v in scales.items()
        )
        if not ok:
            raise refuse(("scales",), "scales must map a letter to [depth, width, max_channels]")
    rows = 0
    for section in ("backbone", "head"):
        value = config.get(section)
        if not isinstance(value, list) or not value:
            raise refuse((section,), f"{section} must be a list of [from, repeats, module, args] rows")
        for i, row in enumerate(value):
            rows += 1
            if rows > _MAX_ROWS:
                raise refuse((section, i), f"more than {_MAX_ROWS} layers")
            _check_row(row, (section, i), layers, torch_layers, refuse)


def _check_row(
    row: object, where: tuple[Any, ...], layers: frozenset[str], torch_layers: frozenset[str], refuse: Any
) -> None:
    if not isinstance(row, list) or len(row) != 4:
        raise refuse(where, f"layer {excerpt(row)} must be [from, repeats, module, args]")
    frm, repeats, module, args = row
    if not (_int(frm) or (isinstance(frm, list) and 0 < len(frm) <= _MAX_ARGS and all(map(_int, frm)))):
        raise refuse(where, f"'from' {excerpt(frm)} must be a layer index or a list of them")
    if not _int(repeats) or not 1 <= repeats <= 1000:
        raise refuse(where, f"repeats {excerpt(repeats)} must be an integer from 1 to 1000")
    if not isinstance(module, str) or not (
        module in layers or (module.startswith("nn.") and module[3:] in torch_layers)
    ):
        raise refuse(where, f"module {excerpt(module)} is not a layer ultralytics builds")
    if not isinstance(args, list) or len(args) > _MAX_ARGS:
        raise refuse(where, f"args {excerpt(args)} must be a list of at most {_MAX_ARGS} values")
    for arg in args:
        if problem := _arg_problem(arg, 0):
            raise refuse(where, f"argument {excerpt(arg)} {problem}")


def _arg_problem(arg: object, depth: int) -> str | None:
    if arg is None or isinstance(arg, bool) or _finite(arg):
        return None
    if isinstance(arg, list):
        if depth >= _MAX_DEPTH or len(arg) > _MAX_ARGS:
            return "nests too deep or too long"
        return next((p for a in arg if (p := _arg_problem(a, depth + 1))), None)
    if not isinstance(arg, str):
        return "is not a number, a word, true/false or a list of those"
    # parse_model passes a string through its locals() or ast.literal_eval, and keeps it if neither applies.
    if arg in _NAMES:
        return None
    if arg in _parse_model_locals():
        return "names a variable of ultralytics' model builder"
    try:
        value = ast.literal_eval(arg)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None if _WORD.fullmatch(arg) else "is not a plain word or literal"
    return _arg_problem(value, depth + 1) if not isinstance(value, str) else None


@functools.cache
def _parse_model_locals() -> frozenset[str]:
    """The variables ``parse_model`` has: names a string argument would resolve to through ``locals()``."""
    tasks = ast.parse((_package_dir("ultralytics") / "nn" / "tasks.py").read_text(encoding="utf-8"))
    func = next(n for n in tasks.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model")
    names = {a.arg for a in func.args.args}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names - _NAMES)


def _activation_ok(act: str) -> bool:
    m = _ACTIVATION.fullmatch(act.strip())
    return m is not None and m.group("name") in ACTIVATIONS


def _check_numbers(config: Mapping[Any, Any], refuse: Any) -> None:
    rules: dict[str, tuple[type | tuple[type, ...], float, float]] = {
        "nc": (int, 1, 100_000), "depth_multiple": (_NUMBERS, 0, 10), "width_multiple": (_NUMBERS, 0, 10),
        "reg_max": (int, 1, 64), "channels": (int, 1, 64), "ch": (int, 1, 64),
    }  # fmt: skip
    for key, (kind, low, high) in rules.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or not _finite(value) or not low <= value <= high:  # type: ignore[operator]
            raise refuse((key,), f"{key} {excerpt(value)} must be a number from {low:g} to {high:g}")
    for key in ("end2end",):
        if config.get(key) not in (None, True, False):
            raise refuse((key,), f"{key} must be true or false")
    shape = config.get("kpt_shape")
    # A list in a yaml; ultralytics itself puts the dataset's (k, d) tuple there before building.
    if shape is not None and not (isinstance(shape, (list, tuple)) and len(shape) == 2 and all(map(_int, shape))):
        raise refuse(("kpt_shape",), "kpt_shape must be [keypoints, 2 or 3]")
    for key in ("scale", "text_model", "yaml_file"):
        value = config.get(key)
        if value is not None and not (isinstance(value, str) and len(value) <= 4096):
            raise refuse((key,), f"{key} must be a string")


def _int(value: object) -> bool:
    return type(value) is int and -100_000 <= value <= 100_000


def _finite(value: object) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, bool) and math.isfinite(value)


def _line(node: yaml.Node | None, where: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at ``where`` (keys and list indexes) in a YAML node tree."""
    best = node.start_mark.line + 1 if node is not None else None
    for step in where:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            node = None
        if node is None:
            break
        best = node.start_mark.line + 1
    return best
