"""Batched descriptor extraction with a progress bar; images of equal input size are batched together."""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..datasets.base import VPRDataset
from ..datasets.images import ImageListDataset, image_size
from ..models.model import encode_images
from ..models.preprocess import RESIZE_POLICIES, Preprocess, target_size  # noqa: F401  (re-exported: registry.evaluation.extract names them too)
from ..runtimes.base import Runtime

PathLike = Union[str, os.PathLike]


def _size_groups(paths: Sequence[PathLike], pre: Preprocess) -> List[List[int]]:
    """Indices grouped by output size (one group when every image is resized to the same size)."""
    if pre.resize == "fixed":
        return [list(range(len(paths)))]
    groups: "OrderedDict[Tuple[int, int], List[int]]" = OrderedDict()
    for i, path in enumerate(paths):
        groups.setdefault(pre.size_of(*image_size(path)), []).append(i)
    return list(groups.values())


def encoder(model: Union[nn.Module, Runtime], device: Optional[torch.device] = None,
            amp: Optional[bool] = None) -> Tuple[Callable[[torch.Tensor], torch.Tensor], Optional[bool]]:
    """(the function that turns a preprocessed batch into L2-normalised descriptors, the module's training flag to
    restore, None for a Runtime): a `registry.Runtime`'s `encode`, else `encode_images` (its non-finite check
    included) on the module, put in eval mode on `device` (default: where it is)."""
    if isinstance(model, Runtime):
        return model.encode, None
    was_training = model.training
    model.eval()
    if device is not None:
        model.to(device)

    def encode(batch: torch.Tensor) -> torch.Tensor:
        return encode_images(model, batch, device, amp)
    return encode, was_training


@torch.inference_mode()
def extract_descriptors(
    model: Union[nn.Module, Runtime],
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
    batches are channels_last and, unless `amp=False`, run under bfloat16 autocast. `model` may be a
    `registry.Runtime` (`registry.compile_for`): its `encode` runs each batch, on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("no images to extract descriptors from")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda" if amp is None else amp
    pre = Preprocess(model.input_config, resize, longer_side)
    data = ImageListDataset(images, pre)
    encode, was_training = encoder(model, device, amp)
    out: Optional[np.ndarray] = None
    try:
        with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
            for group in _size_groups(images, pre):
                loader = DataLoader(Subset(data, group), batch_size=batch_size, num_workers=num_workers,
                                    pin_memory=device.type == "cuda")
                for batch, idx in loader:
                    desc_batch = encode(batch).cpu().numpy()
                    if out is None:
                        out = np.empty((len(images), desc_batch.shape[1]), dtype=np.float32)
                    out[idx.numpy()] = desc_batch
                    bar.update(len(idx))
    finally:
        if was_training is not None:
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
