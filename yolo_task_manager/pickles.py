"""Which code a ``.pt`` checkpoint would run when loaded, found without loading it (and without torch).

A checkpoint is a pickle, and ultralytics unpickles it in full (``weights_only=False``): a crafted file
can run any code on the worker, which sees every user's data. This replays the pickle with a stand-in
for every class or function it names and refuses any name outside what ultralytics checkpoints hold:
PyTorch and ultralytics layers, tensors and plain containers.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from yolo_task_manager.errors import InvalidInput

__all__ = ["check_checkpoint", "read_pickle"]

_LAYER_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.", "torchvision.transforms.")
_BUILTINS = ("set", "frozenset", "slice", "complex", "bytearray", "object")
_SAFE = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch.nn.parameter", "Parameter"),
        ("torch", "Size"),
        ("torch", "device"),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("types", "SimpleNamespace"),
        ("ultralytics.utils", "IterableSimpleNamespace"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }
    | {(module, name) for module in ("builtins", "__builtin__") for name in _BUILTINS}
)
_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"})


def _safe(module: str, name: str) -> bool:
    if (module, name) in _SAFE:
        return True
    if module.startswith(_LAYER_MODULES):  # layer classes (CamelCase), not the modules' helper functions
        return name[:1].isupper()
    if module == "ultralytics.nn.tasks":
        return name.endswith("Model")
    return module == "torch" and (name.endswith("Storage") or name in _DTYPES)


class _StandIn:
    """Takes the place of every allowed class and function: accepts any arguments and state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _Refused(Exception):
    """A name the checkpoint's pickle would look up that no ultralytics checkpoint needs."""


class _Replay(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not _safe(module, name):
            raise _Refused(f"{module}.{name}")
        return _StandIn

    def persistent_load(self, pid: Any) -> None:  # tensor storages live outside the pickle
        return None


def read_pickle(path: Path) -> bytes:
    """The pickle inside a PyTorch checkpoint (a zip archive holding ``<name>/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            return archive.read(name)
    except (zipfile.BadZipFile, StopIteration, OSError):
        raise InvalidInput(f"{path} is not a PyTorch checkpoint (.pt zip archive): re-export or re-copy it") from None


def check_checkpoint(path: Path, data: bytes | None = None, *, trusted_dir: Path | None = None) -> None:
    """Raise ``InvalidInput`` if loading ``path`` could run code other than building layers and tensors.

    ``data`` is its pickle when already read; ``trusted_dir`` is named in the message as the place an
    operator can put a checkpoint they vouch for.
    """
    try:
        _Replay(io.BytesIO(read_pickle(path) if data is None else data)).load()
    except _Refused as refused:
        where = f"; an operator who trusts it can copy it into {trusted_dir}/" if trusted_dir else ""
        raise InvalidInput(
            f"{path} refers to {refused}, which an ultralytics checkpoint never needs: loading it could run "
            f"code on the worker, so it is refused{where}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any pickle the replay cannot read is not one ultralytics wrote
        raise InvalidInput(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
