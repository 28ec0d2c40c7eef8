"""ImageListDataset: a torch Dataset over image paths whose errors name the file that failed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence, Tuple, Union

from PIL import Image
from torch.utils.data import Dataset

from .._util.image_modes import to_rgb

MAX_PIXELS = 64_000_000  # the most pixels (width x height) an image may have to be decoded; VPR_MAX_IMAGE_PIXELS
# overrides it (a 16-bit 64 MP image decodes to 128 MB, then 192 MB as RGB; Pillow's own limit is 179 MP)
MAX_PIXELS_ENV = "VPR_MAX_IMAGE_PIXELS"


class ImageReadError(OSError):
    """An image file is missing, truncated, not an image, or larger than the pixel budget (max_pixels())."""


def max_pixels() -> int:
    """The pixel budget of `open_rgb`: $VPR_MAX_IMAGE_PIXELS if set (a positive integer), else MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is None:
        return MAX_PIXELS
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={text[:40]!r} is not a positive whole number of pixels (default "
                         f"{MAX_PIXELS:,})")
    return int(text)


def open_rgb(path: Union[str, os.PathLike]) -> Image.Image:
    """Open an image fully decoded as 8-bit RGB (16-bit images scaled, not clipped: registry._util.image_modes.to_rgb),
    or raise ImageReadError naming the file. Its size is read from the header first: an image of more than
    max_pixels() pixels is refused before it is decoded."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}; check the dataset root or re-download the dataset")
    return _decode_rgb(path, str(path), max_pixels())


def _decode_rgb(source: Union[Path, BinaryIO], name: str, budget: int) -> Image.Image:
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > budget:
                raise ImageReadError(
                    f"image {name} is {width}x{height} = {width * height:,} pixels, more than the {budget:,} an image "
                    f"may have (registry.datasets.images.MAX_PIXELS); shrink it, or raise the budget with "
                    f"{MAX_PIXELS_ENV}=N if the machine has the memory")
            img.load()
            decoded = img
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"cannot read image {name} ({err}): Pillow refuses it as a decompression bomb; shrink "
                             "it or remove it") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(
            f"cannot read image {name} ({err}); the file is corrupt or truncated: re-download it or remove it"
        ) from err
    try:
        return to_rgb(decoded)
    except ValueError as err:
        raise ImageReadError(f"cannot use image {name} (mode {decoded.mode}): {err}") from err


def image_size(path: Union[str, os.PathLike]) -> Tuple[int, int]:
    """(width, height) from the image header, or ImageReadError naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError as err:
        raise ImageReadError(f"image file not found: {path}; check the dataset root or re-download it") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"cannot read image {path} ({err}): Pillow refuses it as a decompression bomb; shrink "
                             "it or remove it") from None
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
