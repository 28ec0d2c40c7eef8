"""Image preprocessing of the model layer: PIL image -> normalised float tensor at the model's input size, by its
resize policy ('fixed', or 'longer_side' keeping the aspect). `VPRModel.transform`, extraction and training use it
(also importable from registry.evaluation, where it started)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .._util.image_modes import to_rgb

RESIZE_POLICIES = ("fixed", "longer_side")
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def target_size(width: int, height: int, resize: str, input_hw: Tuple[int, int], longer_side: int) -> Tuple[int, int]:
    """(height, width) an image is resized to: `input_hw` ('fixed') or aspect kept with the longer side given."""
    if resize == "fixed":
        return input_hw
    scale = longer_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


class Preprocess:
    """PIL image (RGB, greyscale, 16-bit: registry._util.image_modes.to_rgb) -> normalised float tensor (3, H, W),
    resized by the given policy."""

    def __init__(self, input_config: Dict[str, Any], resize: Optional[str] = None, longer_side: Optional[int] = None):
        _, h, w = input_config["input_size"]
        self.resize = resize or input_config.get("resize", "fixed")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        self.input_hw = (int(h), int(w))
        self.longer_side = int(longer_side or max(h, w))
        interpolation = input_config.get("interpolation", "bilinear")
        if interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {interpolation!r}")
        self.resample = _RESAMPLE[interpolation]
        self.mean = torch.tensor(input_config["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(input_config["std"], dtype=torch.float32).view(3, 1, 1)

    def size_of(self, width: int, height: int) -> Tuple[int, int]:
        """Output (height, width) for an input of this width and height."""
        return target_size(width, height, self.resize, self.input_hw, self.longer_side)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = to_rgb(img)  # 16-bit images scaled to 8 bits, never clipped or wrapped
        h, w = self.size_of(*img.size)
        if (w, h) != img.size:
            img = img.resize((w, h), resample=self.resample)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std
