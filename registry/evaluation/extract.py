"""Batched descriptor extraction with a progress bar; images of equal input size are batched together."""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..datasets.base import VPRDataset
from ..datasets.images import ImageListDataset, image_size
from ..model import encode_images

PathLike = Union[str, os.PathLike]
RESIZE_POLICIES = ("fixed", "longer_side")
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def target_size(width: int, height: int, resize: str, input_hw: Tuple[int, int], longer_side: int) -> Tuple[int, int]:
    """(height, width) an image is resized to: `input_hw` ('fixed') or aspect kept with the longer side given."""
    if resize == "fixed":
        return input_hw
    scale = longer_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


class Preprocess:
    """PIL image -> normalised float tensor (3, H, W), resized by the given policy."""

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
        h, w = self.size_of(*img.size)
        if (w, h) != img.size:
            img = img.resize((w, h), resample=self.resample)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std


def _size_groups(paths: Sequence[PathLike], pre: Preprocess) -> List[List[int]]:
    """Indices grouped by output size (one group when every image is resized to the same size)."""
    if pre.resize == "fixed":
        return [list(range(len(paths)))]
    groups: "OrderedDict[Tuple[int, int], List[int]]" = OrderedDict()
    for i, path in enumerate(paths):
        groups.setdefault(pre.size_of(*image_size(path)), []).append(i)
    return list(groups.values())


@torch.inference_mode()
def extract_descriptors(
    model: nn.Module,
    images: Sequence[PathLike],
    batch_size: int = 32,
    device: Optional[Union[str, torch.device]] = None,
    num_workers: int = 0,
    amp: Optional[bool] = None,
    resize: Optional[str] = None,
    longer_side: Optional[int] = None,
    progress: bool = True,
    desc: str = "descriptors",
) -> np.ndarray:
    """(N, D) float32 L2-normalised descriptors of image files, in input order.

    Preprocessing follows `model.input_config` unless `resize`/`longer_side` override it; on CUDA the
    batches are channels_last and, unless `amp=False`, run under bfloat16 autocast.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("no images to extract descriptors from")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda" if amp is None else amp
    pre = Preprocess(model.input_config, resize, longer_side)
    data = ImageListDataset(images, pre)
    was_training = model.training
    model.eval().to(device)
    out: Optional[np.ndarray] = None
    try:
        with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
            for group in _size_groups(images, pre):
                loader = DataLoader(Subset(data, group), batch_size=batch_size, num_workers=num_workers,
                                    pin_memory=device.type == "cuda")
                for batch, idx in loader:
                    desc_batch = encode_images(model, batch, device, amp).cpu().numpy()
                    if out is None:
                        out = np.empty((len(images), desc_batch.shape[1]), dtype=np.float32)
                    out[idx.numpy()] = desc_batch
                    bar.update(len(idx))
    finally:
        model.train(was_training)
    return out


def extract_dataset(model: nn.Module, dataset: VPRDataset, **kwargs: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(query, database) descriptors; queries get the dataset's protocol resize (Tokyo 24/7: longer side 640)."""
    q_kwargs = dict(kwargs)
    if dataset.query_longer_side is not None:
        q_kwargs.update(resize="longer_side", longer_side=dataset.query_longer_side)
    db = extract_descriptors(model, dataset.db_images, desc=f"{dataset.name} database", **kwargs)
    q = extract_descriptors(model, dataset.q_images, desc=f"{dataset.name} queries", **q_kwargs)
    return q, db
