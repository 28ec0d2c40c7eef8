"""Writes miniature datasets (tiny real image files) for the adapter tests."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def write_images(folder: Path, names: Iterable[str]) -> None:
    """One small solid-colour image per name under `folder` (format from the suffix)."""
    from PIL import Image

    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        value = (37 * i) % 256
        Image.new("RGB", (8, 6), (value, value // 2, 255 - value)).save(path)
