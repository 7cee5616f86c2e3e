"""Images of a dataset, verified the way ultralytics will read them (Pillow, lazily imported)."""

from __future__ import annotations

import os
from pathlib import Path

from yolo_task_manager.datasets.files import UnreadableFile, excerpt, open_regular, shown
from yolo_task_manager.datasets.listing import IMAGE_SUFFIXES, Findings

__all__ = ["verify_images"]


def verify_images(images: list[tuple[str, str]], root: Path) -> Findings:
    """Open each (path, real file) as ultralytics will, through a descriptor that cannot block."""
    from PIL import Image  # Pillow only loads when a dataset is checked

    bad = Findings("unreadable or corrupt images", "replace or delete these image files")
    for image, real in images:
        try:
            with os.fdopen(open_regular(real, "image")[0], "rb") as f, Image.open(f) as im:
                im.verify()
                size, fmt = im.size, (im.format or "").lower()
        except UnreadableFile as exc:
            bad.add(f"{shown(image, root)} {exc.reason}")
            continue
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file, all the user's
            bad.add(f"{shown(image, root)} ({exc.__class__.__name__}: {excerpt(exc)[1:-1]})")
            continue
        if min(size) < 10:  # ultralytics drops such images
            bad.add(f"{shown(image, root)} is {size[0]}x{size[1]} pixels, under 10 a side")
        elif fmt not in IMAGE_SUFFIXES:
            bad.add(f"{shown(image, root)} is a {excerpt(fmt.upper(), 20)[1:-1]} file: save it as JPEG or PNG")
    return bad
