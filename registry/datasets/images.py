"""ImageListDataset: a torch Dataset over image paths whose errors name the file that failed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

from PIL import Image
from torch.utils.data import Dataset

from .._image_modes import to_rgb


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def open_rgb(path: Union[str, os.PathLike]) -> Image.Image:
    """Open an image fully decoded as 8-bit RGB (16-bit images scaled, not clipped: registry._image_modes.to_rgb),
    or raise ImageReadError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}; check the dataset root or re-download the dataset")
    try:
        with Image.open(path) as img:
            img.load()
            decoded = img
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(
            f"cannot read image {path} ({err}); the file is corrupt or truncated: re-download it or remove it"
        ) from err
    try:
        return to_rgb(decoded)
    except ValueError as err:
        raise ImageReadError(f"cannot use image {path} (mode {decoded.mode}): {err}") from err


def image_size(path: Union[str, os.PathLike]) -> Tuple[int, int]:
    """(width, height) from the image header, or ImageReadError naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError as err:
        raise ImageReadError(f"image file not found: {path}; check the dataset root or re-download it") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(
            f"cannot read image {path} ({err}); the file is corrupt: re-download or remove it"
        ) from err


class ImageListDataset(Dataset):
    """Items are `(transform(image), index)`; with no transform the PIL image is returned."""

    def __init__(self, paths: Sequence[Union[str, os.PathLike]], transform: Optional[Callable] = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        img = open_rgb(self.paths[index])
        return (self.transform(img) if self.transform is not None else img), index
