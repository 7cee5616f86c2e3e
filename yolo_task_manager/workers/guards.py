"""Guards the training child installs once ultralytics is imported: a tenant's files are read, never trusted.

ultralytics writes ``labels/<split>.cache`` (and a classification ``<split>.cache``) beside a dataset and
loads any it finds with numpy's ``allow_pickle=True``: a tenant who ships one runs code on the worker. It
also keeps ``<image>.npy`` copies beside the images (and reads one it finds, or deletes it, or writes
through a link there), and rewrites a truncated JPEG in place. And ``parse_model`` resolves a model yaml's
names in a namespace that holds ``torch_load``. So here:

- dataset caches are never loaded, and never written (every run scans its labels again: seconds);
- ``.npy`` image caches (``cache='disk'``) live in the run's scratch folder, named by a hash of the image path;
- images are never rewritten (a truncated JPEG is used as it is: the dataset check let it through);
- every model dict is checked by ``model_yaml.check_model_config`` before ``parse_model`` builds it (a yaml
  named by path, one planted in the working folder, or the one a checkpoint embeds).

Importing this module does not import ultralytics.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["guard_dataset_caches", "guard_model_configs", "guard_training"]


def guard_training(scratch: Path) -> None:
    """Install every guard; ``scratch`` is a folder of the run's own that nothing else reads."""
    guard_dataset_caches(scratch)
    guard_model_configs()


def guard_dataset_caches(scratch: Path) -> None:
    """Make ultralytics never load a dataset cache, and write its image caches only under ``scratch``."""
    from ultralytics.data import base, dataset, utils
    from ultralytics.utils import LOGGER

    original_load, original_save = utils.load_dataset_cache_file, utils.save_dataset_cache_file

    def load_dataset_cache_file(path: Path) -> dict[str, Any]:
        # Any exception makes ultralytics scan the labels afresh; a cache beside the data is the tenant's file.
        raise FileNotFoundError(f"{path}: dataset caches are never loaded here (a tenant could have written it)")

    def save_dataset_cache_file(prefix: str, path: Path, x: dict[str, Any], version: str) -> None:
        x["version"] = version  # as the original does: its callers read the dict they passed
        LOGGER.info(f"{prefix}Cache not saved: datasets are read-only to training ({Path(path).name})")

    for module in list(sys.modules.values()):  # every module that imported them by name
        if getattr(module, "__name__", "").startswith("ultralytics"):
            for name, old, new in (
                ("load_dataset_cache_file", original_load, load_dataset_cache_file),
                ("save_dataset_cache_file", original_save, save_dataset_cache_file),
            ):
                if getattr(module, name, None) is old:
                    setattr(module, name, new)

    images = scratch / "image-cache"

    def placed(npy: Path | str) -> Path:
        images.mkdir(parents=True, exist_ok=True)
        return images / (hashlib.sha256(os.fsencode(os.path.abspath(npy))).hexdigest()[:40] + ".npy")

    def get_npy(self: Any) -> list[Path]:
        return self.__dict__["_ytm_npy_files"]  # type: ignore[no-any-return]

    def set_npy(self: Any, files: list[Path]) -> None:
        self.__dict__["_ytm_npy_files"] = [placed(f) for f in files]

    base.BaseDataset.npy_files = property(get_npy, set_npy)  # __init__ assigns it
    _wrap_after(dataset.ClassificationDataset, "__init__", lambda self: _place_samples(self, placed))

    def replace_image(im_file: str | Path, write: Callable[[str], Any]) -> None:
        raise PermissionError(f"{im_file}: datasets are read-only to training, so this image is not rewritten")

    utils._replace_image = replace_image


def _place_samples(ds: Any, placed: Callable[[Path | str], Path]) -> None:
    # ClassificationDataset keeps [file, class, npy path, image] per sample.
    ds.samples = [[s[0], s[1], placed(s[2]), *s[3:]] for s in ds.samples]


def _wrap_after(cls: type, name: str, after: Callable[[Any], None]) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        after(self)

    setattr(cls, name, wrapped)


def guard_model_configs() -> None:
    """Check every model dict with ``model_yaml.check_model_config`` before ultralytics' ``parse_model``."""
    from ultralytics.nn import tasks

    from yolo_task_manager.model_yaml import check_model_config

    original = tasks.parse_model

    @functools.wraps(original)
    def parse_model(d: dict[str, Any], ch: Any, verbose: bool = True) -> Any:
        check_model_config(d, str(d.get("yaml_file") or "the model yaml") if isinstance(d, dict) else "the model yaml")
        return original(d, ch, verbose)

    tasks.parse_model = parse_model
