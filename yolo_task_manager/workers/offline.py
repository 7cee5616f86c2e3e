"""The environment that keeps ultralytics off the network (see notes/ultralytics-offline-facts.md)."""

from __future__ import annotations

import functools
import importlib.util
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ULTRALYTICS_SETTINGS", "configure_ultralytics", "offline_env"]

ULTRALYTICS_SETTINGS: dict[str, object] = {
    "sync": False,
    "api_key": "",
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}

_DROP = ("ULTRALYTICS_API_KEY", "WANDB_API_KEY", "COMET_API_KEY")


def _font_source() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    font = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return font if font.is_file() else None


def offline_env(base: Mapping[str, str], scratch: Path) -> dict[str, str]:
    """Environment for a process that imports ultralytics, with all of its caches under ``scratch``.

    Writes the fonts ultralytics would otherwise download into ``scratch/config/Ultralytics``.
    """
    config = scratch / "config" / "Ultralytics"
    config.mkdir(parents=True, exist_ok=True)
    font = _font_source()
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if font is not None and not (config / name).exists():
            shutil.copyfile(font, config / name)
    env = {k: v for k, v in base.items() if k not in _DROP}
    env.update(
        YOLO_OFFLINE="1",
        YOLO_AUTOINSTALL="0",
        YOLO_CONFIG_DIR=str(scratch / "config"),
        MPLCONFIGDIR=str(scratch / "matplotlib"),
        TORCHINDUCTOR_CACHE_DIR=str(scratch / "torchinductor"),
        XDG_CACHE_HOME=str(scratch / "cache"),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@functools.cache
def configure_ultralytics() -> None:
    """Turn off ultralytics' sync and integrations, with its folders under this process's scratch.

    Call after importing ultralytics in a process started with ``offline_env``; once is enough.
    """
    import os

    from ultralytics import settings

    scratch = Path(os.environ["YOLO_CONFIG_DIR"]).parent
    folders = {name: str(scratch / name.removesuffix("_dir")) for name in ("runs_dir", "weights_dir", "datasets_dir")}
    settings.update({**ULTRALYTICS_SETTINGS, **folders})
