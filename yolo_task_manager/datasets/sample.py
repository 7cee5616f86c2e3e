"""A small generated detection dataset (squares and discs), so the demo needs no download."""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["CLASSES", "make_sample_dataset"]

CLASSES = ("square", "disc")


def make_sample_dataset(dest: str | Path, *, train: int = 16, val: int = 8, size: int = 96, seed: int = 0) -> Path:
    """Write a YOLO dataset with ``data.yaml`` under ``dest`` (replacing nothing that exists); return it."""
    from PIL import Image, ImageDraw

    dest = Path(dest)
    if (dest / "data.yaml").is_file():
        return dest
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = Image.new("RGB", (size, size), tuple(rng.randint(0, 80) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            lines = []
            for _ in range(rng.randint(1, 3)):
                cls = rng.randrange(len(CLASSES))
                w = rng.randint(size // 5, size // 2)
                x0, y0 = rng.randint(0, size - w), rng.randint(0, size - w)
                color = tuple(rng.randint(150, 255) for _ in range(3))
                shape = draw.rectangle if cls == 0 else draw.ellipse
                shape([x0, y0, x0 + w, y0 + w], fill=color)
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + w / 2) / size:.6f} {w / size:.6f} {w / size:.6f}")
            image.save(dest / "images" / split / f"{split}_{i:03d}.png")
            (dest / "labels" / split / f"{split}_{i:03d}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    (dest / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames:\n{names}\n")
    return dest
