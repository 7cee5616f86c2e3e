"""Which code a ``.pt`` checkpoint would run when loaded, found without loading it (and without torch).

A checkpoint is a pickle, and ultralytics unpickles it in full (``weights_only=False``): a crafted file
can run any code on the worker, which sees every user's data. This replays the pickle in a pure Python
unpickler where every class or function it names is a stand-in, and checks what each opcode would do with
them: a name must be exactly one that ultralytics checkpoints hold (a dotted name, which protocol 4 resolves
attribute by attribute, only when the whole path is listed), a layer may only be created empty and given its
state (never called with arguments, which runs its ``__init__``), a function only called with the arguments
torch or numpy write, a module's hooks must be empty, and a model's embedded yaml must pass
``model_yaml.check_model_config``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolo_task_manager.errors import InvalidInput

__all__ = ["MAX_PICKLE_BYTES", "check_checkpoint", "read_pickle"]

MAX_PICKLE_BYTES = 64 << 20
"""A checkpoint's ``data.pkl`` (tensors live beside it) above 64 MiB is refused; a yolov8x one is ~0.3 MiB."""
_LAYER_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.", "torchvision.transforms.")
_NOT_LAYERS = frozenset({"torchvision.transforms.transforms.Lambda"})  # holds a function it calls on each image
_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"})
_NAMESPACES = frozenset({"types.SimpleNamespace", "ultralytics.utils.IterableSimpleNamespace"})
_REBUILDS = frozenset(
    {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
     "torch._utils._rebuild_parameter_with_state"}
)  # fmt: skip
_NUMPY = ("numpy.core.multiarray", "numpy._core.multiarray")


class _Refused(Exception):
    """Something the checkpoint's pickle would do that no ultralytics checkpoint does."""


class _Global:
    """A class or function the pickle names: ``kind`` says what may be done with it."""

    __slots__ = ("kind", "name")

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind

    def __repr__(self) -> str:
        return self.name


class _Value:
    """What an allowed constructor or function would have built; it is never called and runs nothing."""

    __slots__ = ("items", "made_by", "state")

    def __init__(self, made_by: str) -> None:
        self.made_by, self.items, self.state = made_by, 0, None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items += 1

    def append(self, item: Any) -> None:
        self.items += 1

    def extend(self, items: Any) -> None:
        self.items += len(items)

    def __repr__(self) -> str:
        return f"<{self.made_by}>"


def _kind(module: str, name: str) -> str | None:
    """What a global may be used as: "layer" (created empty, then given state), "call" (called by REDUCE),
    "constant", "storage", "object", "class" (only passed to a function that checks it); None: refused."""
    full = f"{module}.{name}"
    if full in _CALLS:
        return "call"
    if "." in name:  # protocol 4 resolves "a.b.c" by getattr: only whole listed paths (none are) pass
        return None
    if full in _NOT_LAYERS:
        return None
    if module in ("builtins", "__builtin__") and name == "object":
        return "object"
    if module == "torch":
        if name.endswith("Storage") and name.isidentifier():
            return "storage"
        if name in _DTYPES:
            return "constant"
        if name == "Tensor":
            return "class"
    if full in ("torch.nn.parameter.Parameter", "numpy.ndarray"):
        return "class"
    if module.startswith(_LAYER_MODULES) or (module == "ultralytics.nn.tasks" and name.endswith("Model")):
        # A class the module itself defines (not one it imports, like Tensor, OrderedDict or PIL's Image).
        return "layer" if name[:1].isupper() and name in _defined_classes(module) else None
    return None


@functools.cache
def _defined_classes(module: str) -> frozenset[str]:
    """The classes ``module``'s source defines at its top level, read with ``ast`` (nothing is imported)."""
    top, *rest = module.split(".")
    if not all(part.isidentifier() for part in (top, *rest)):
        return frozenset()
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    source = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
    if source is None:
        return frozenset()
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body if isinstance(node, ast.ClassDef))


# -- what each callable may be called with: a function of the args tuple saying what is wrong, or None --


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return True
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)) and depth < 8:
        return all(_plain(v, depth + 1) for v in value)
    return False


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(v) is int for v in value)


def _empty_hooks(value: Any) -> bool:
    return (
        isinstance(value, _Value)
        and value.made_by == "collections.OrderedDict"
        and value.items == 0
        or (isinstance(value, dict) and not value)
    )


def _storage(value: Any) -> bool:
    return isinstance(value, _Value) and value.made_by == "storage"


def _tensor(value: Any) -> bool:
    return isinstance(value, _Value) and value.made_by in _REBUILDS | {"torch._tensor._rebuild_from_type_v2"}


def _rebuild_tensor_v2(a: tuple[Any, ...]) -> str | None:
    ok = 6 <= len(a) <= 7 and _storage(a[0]) and type(a[1]) is int and _ints(a[2]) and _ints(a[3])
    ok = ok and isinstance(a[4], bool) and _empty_hooks(a[5]) and (len(a) == 6 or isinstance(a[6], dict))
    return None if ok else "a storage, offset, size, stride, requires_grad and no backward hooks"


def _rebuild_tensor(a: tuple[Any, ...]) -> str | None:
    ok = len(a) == 4 and _storage(a[0]) and type(a[1]) is int and _ints(a[2]) and _ints(a[3])
    return None if ok else "a storage, offset, size and stride"


def _rebuild_parameter(a: tuple[Any, ...]) -> str | None:
    ok = len(a) in (3, 4) and _tensor(a[0]) and isinstance(a[1], bool) and _empty_hooks(a[2])
    return None if ok and (len(a) == 3 or isinstance(a[3], dict)) else "a tensor, requires_grad and no hooks"


def _rebuild_from_type_v2(a: tuple[Any, ...]) -> str | None:
    if len(a) != 4 or not isinstance(a[0], _Global) or a[0].name not in _REBUILDS or not isinstance(a[2], tuple):
        return "one of torch's tensor rebuild functions and its arguments"
    if not isinstance(a[1], _Global) or a[1].name not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
        return "a tensor type"
    return _CALLS[a[0].name](a[2]) or (None if isinstance(a[3], dict) else "a state dict")


def _reconstructor(a: tuple[Any, ...]) -> str | None:
    # copyreg._reconstructor(cls, base, state) runs base.__init__(obj, state) unless base is object.
    ok = len(a) == 3 and isinstance(a[0], _Global) and a[0].kind == "layer"
    return None if ok and isinstance(a[1], _Global) and a[1].kind == "object" and a[2] is None else "a layer, object"


def _no_args(a: tuple[Any, ...]) -> str | None:
    return None if a == () else "no arguments"


def _one_plain_list(a: tuple[Any, ...]) -> str | None:
    return None if a == () or (len(a) == 1 and isinstance(a[0], (list, tuple)) and _plain(a[0])) else "a list"


def _strings(a: tuple[Any, ...]) -> str | None:
    return None if 0 < len(a) <= 64 and all(isinstance(x, str) for x in a) else "strings"


_CALLS: dict[str, Callable[[tuple[Any, ...]], str | None]] = {
    "collections.OrderedDict": _no_args,
    "builtins.set": _one_plain_list,
    "builtins.frozenset": _one_plain_list,
    "__builtin__.set": _one_plain_list,
    "__builtin__.frozenset": _one_plain_list,
    "builtins.slice": lambda a: None if len(a) <= 3 and all(x is None or type(x) is int for x in a) else "integers",
    "builtins.complex": lambda a: None if len(a) <= 2 and all(isinstance(x, (int, float)) for x in a) else "numbers",
    "builtins.bytearray": lambda a: None if len(a) <= 2 and all(isinstance(x, (str, bytes)) for x in a) else "bytes",
    "_codecs.encode": lambda a: (
        None if len(a) == 2 and isinstance(a[0], str) and a[1] in ("latin1", "latin-1") else "a string and latin1"
    ),
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.Size": lambda a: None if len(a) == 1 and _ints(a[0]) else "a tuple of integers",
    "torch.device": lambda a: (
        None if 1 <= len(a) <= 2 and isinstance(a[0], str) and (len(a) == 1 or type(a[1]) is int) else "a device name"
    ),
    "copyreg._reconstructor": _reconstructor,
    "types.SimpleNamespace": _no_args,
    "ultralytics.utils.IterableSimpleNamespace": _no_args,
    "pathlib.PosixPath": _strings,
    "pathlib.WindowsPath": _strings,
    "pathlib.PurePosixPath": _strings,
    "pathlib.PureWindowsPath": _strings,
    "torchvision.transforms.functional.InterpolationMode": lambda a: (
        None if len(a) == 1 and isinstance(a[0], str) else "a mode name"
    ),
    "numpy.dtype": lambda a: (
        None if len(a) == 3 and isinstance(a[0], str) and all(isinstance(x, bool) for x in a[1:]) else "a dtype name"
    ),
    **{
        f"{m}._reconstruct": lambda a: (
            None
            if len(a) == 3 and isinstance(a[0], _Global) and a[0].name == "numpy.ndarray" and _plain(a[1])
            else "numpy.ndarray, a shape and a type code"
        )
        for m in _NUMPY
    },
    **{
        f"{m}.scalar": lambda a: (
            None
            if len(a) == 2 and isinstance(a[0], _Value) and a[0].made_by == "numpy.dtype" and isinstance(a[1], bytes)
            else "a dtype and bytes"
        )
        for m in _NUMPY
    },
}
"""Functions (and value classes) a checkpoint's pickle calls, each with the shape of its arguments."""
_BUILDABLE = _NAMESPACES | {"numpy.dtype", *(f"{m}._reconstruct" for m in _NUMPY)}


_PurePythonUnpickler: Any = pickle._Unpickler  # its opcodes can be replaced


class _Replay(_PurePythonUnpickler):  # type: ignore[misc]
    """The pure Python unpickler, with every opcode that calls or changes an object checked first."""

    dispatch = dict(_PurePythonUnpickler.dispatch)

    def __init__(self, data: bytes, check_yaml: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(io.BytesIO(data))
        self._check_yaml = check_yaml

    def find_class(self, module: str, name: str) -> _Global:
        kind = _kind(module, name)
        if kind is None:
            raise _Refused(f"refers to {_short(module + '.' + name)}, which an ultralytics checkpoint never needs")
        return _Global(f"{module}.{name}", kind)

    def persistent_load(self, pid: Any) -> _Value:  # tensor storages live outside the pickle
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _Global) or pid[1].kind != "storage" or not isinstance(pid[2], str):
            raise _Refused("holds a persistent id that is not a tensor storage, which torch never writes")
        return _Value("storage")

    def _call(self, func: Any, args: Any, how: str) -> _Value:
        if not isinstance(func, _Global) or func.kind != "call":
            what = f"{func.name} (a {func.kind})" if isinstance(func, _Global) else _short(repr(func))
            raise _Refused(f"{how} {what}, which an ultralytics checkpoint never calls")
        if not isinstance(args, tuple) or (problem := _CALLS[func.name](args)) is not None:
            raise _Refused(f"calls {func.name} with {_short(repr(args))} where torch writes {problem}")
        return _Value(func.name)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, "calls")

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ call klass(*args)
        self.append(self._call(klass, tuple(args), "instantiates"))

    def _new(self, cls: Any, args: Any, kwargs: Any) -> None:  # cls.__new__(cls, ...): a layer, empty
        if not isinstance(cls, _Global) or cls.kind not in ("layer", "call"):
            raise _Refused(f"creates {_short(repr(cls))}, which an ultralytics checkpoint never creates")
        if args != () or kwargs:
            raise _Refused(f"creates {cls.name} with arguments {_short(repr(args))}, which torch never writes")
        self.append(_Value(cls.name))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._new(cls, args, {})

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._new(cls, args, kwargs)

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _Value) or not (_is_layer(inst.made_by) or inst.made_by in _BUILDABLE):
            raise _Refused(f"sets the state of {_short(repr(inst))}, which an ultralytics checkpoint never does")
        if inst.made_by.startswith(("numpy", "ultralytics.utils", "types")):
            if inst.made_by not in _NAMESPACES and not isinstance(state, tuple):
                raise _Refused(f"sets the state of {inst.made_by} to {_short(repr(state))}")
            return
        fields, slots = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
        if not isinstance(fields, dict) or slots is not None:
            raise _Refused(f"sets the state of {inst.made_by} to {_short(repr(state))}, which torch never writes")
        for key, value in fields.items():
            if isinstance(key, str) and key.endswith("hooks") and not _empty_hooks(value):
                raise _Refused(f"gives {inst.made_by} {key}, code that would run whenever the model runs")
        if inst.made_by.startswith("ultralytics.nn.tasks.") and isinstance(fields.get("yaml"), dict):
            self._check_yaml(fields["yaml"])

    dispatch[pickle.BUILD[0]] = load_build


def _is_layer(name: str) -> bool:
    module, _, short = name.rpartition(".")
    return _kind(module, short) == "layer"


def _short(text: str) -> str:
    from yolo_task_manager.datasets.files import excerpt

    return excerpt(text)[1:-1]


def read_pickle(path: Path) -> bytes:
    """The pickle torch would load from a checkpoint: ``<archive>/data.pkl``, where ``<archive>`` is the
    folder of the zip's first entry, as torch finds it.

    Raises:
        InvalidInput: not a zip, no such pickle, names that repeat (which entry torch reads is unclear), or
            a pickle above ``MAX_PICKLE_BYTES``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            if not names or "/" not in names[0]:
                raise StopIteration
            if len(set(names)) != len(names):
                raise InvalidInput(f"{path} holds entries with the same name twice: re-save it with torch.save")
            record = names[0].split("/", 1)[0] + "/data.pkl"
            info = next(i for i in infos if i.filename == record)
            if info.file_size > MAX_PICKLE_BYTES:
                raise InvalidInput(f"{path}: its data.pkl is larger than {MAX_PICKLE_BYTES >> 20} MiB: refused")
            with archive.open(info) as f:
                data = f.read(MAX_PICKLE_BYTES + 1)
            if len(data) > MAX_PICKLE_BYTES:
                raise InvalidInput(f"{path}: its data.pkl is larger than {MAX_PICKLE_BYTES >> 20} MiB: refused")
            return data
    except (zipfile.BadZipFile, StopIteration, OSError, EOFError, NotImplementedError, RuntimeError):
        raise InvalidInput(f"{path} is not a PyTorch checkpoint (.pt zip archive): re-export or re-copy it") from None


def check_checkpoint(path: Path, data: bytes | None = None, *, trusted_dir: Path | None = None) -> None:
    """Raise ``InvalidInput`` if loading ``path`` could run code other than building layers and tensors.

    Call it before ``torch.load``/``YOLO(path)`` of any checkpoint not from the operator's folder: a base
    model named by path, a ``last.pt`` about to be resumed, a model in a tenant's ``models/`` folder.
    ``data`` is its pickle when already read; ``trusted_dir`` is named in the message as the place an
    operator can put a checkpoint they vouch for.
    """
    from yolo_task_manager.model_yaml import check_model_config

    def check_yaml(config: dict[str, Any]) -> None:
        check_model_config(config, f"{path} (the model yaml it embeds)")

    where = f"; an operator who trusts it can copy it into {trusted_dir}/" if trusted_dir else ""
    try:
        _Replay(read_pickle(path) if data is None else data, check_yaml).load()
    except _Refused as refused:
        raise InvalidInput(
            f"{path} {refused}: loading it could run code on the worker, so it is refused{where}"
        ) from None
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any pickle the replay cannot read is not one ultralytics wrote
        raise InvalidInput(f"{path} is not a readable checkpoint ({type(exc).__name__}: {_short(str(exc))})") from None
