"""Where training inputs come from: image files through the whole backbone, or cached frozen-prefix features.

A source numbers its items 0..N-1 (the training set's database images first, then its queries), gives
the input tensor of an item, and turns a batch of inputs into the model's local feature map.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..datasets.images import open_rgb
from ..models.backbones import backbone_stages
from ..models.preprocess import Preprocess

PathLike = Union[str, os.PathLike]
Jitter = Tuple[float, float, float, float]


class ImageSource:
    """Image files, preprocessed as evaluation does; colour jitter on training items when `jitter` is set."""

    def __init__(self, paths: Sequence[PathLike], input_config: dict, jitter: Optional[Jitter] = None,
                 num_workers: int = 0) -> None:
        if input_config.get("resize", "fixed") != "fixed":
            raise ValueError("training batches need one input size: build the model with resize='fixed'")
        self.paths = list(paths)
        self.pre = Preprocess(input_config)
        self.jitter = _color_jitter(jitter)
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int, train: bool) -> torch.Tensor:
        """(3, H, W) normalised image; ImageReadError names a missing or corrupt file."""
        img = open_rgb(self.paths[index])
        if train and self.jitter is not None:
            img = self.jitter(img)
        return self.pre(img)

    def features(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's whole backbone (after its input conversion, for input_norm='imagenet')."""
        return model.backbone(model.to_native(inputs))


class CachedSource:
    """Precomputed outputs of the backbone's frozen leading layers; only the layers after `cut` run."""

    def __init__(self, features: torch.Tensor, cut: int, num_workers: int = 0) -> None:
        self.cache = features
        self.cut = cut
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.cache)

    def item(self, index: int, train: bool) -> torch.Tensor:
        """Cached (C, h, w) features (no colour jitter: the images were encoded once)."""
        return self.cache[index].float()

    def features(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's backbone layers from `cut` on."""
        x = inputs
        for layer in backbone_stages(model.backbone)[self.cut :]:
            x = layer(x)
        return x


Source = Union[ImageSource, CachedSource]


class _Tuples(Dataset):
    """Training tuples as a torch Dataset: one stacked (T, ...) input per tuple."""

    def __init__(self, source: Source, tuples: Sequence[Sequence[int]]) -> None:
        self.source, self.tuples = source, [list(t) for t in tuples]

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.stack([self.source.item(j, True) for j in self.tuples[i]])


def tuple_loader(source: Source, tuples: Sequence[Sequence[int]], batch_size: int) -> DataLoader:
    """Batches (B, T, ...) of training tuples, in the given order."""
    return DataLoader(_Tuples(source, tuples), batch_size=batch_size, shuffle=False,
                      num_workers=source.num_workers)


def stack_items(source: Source, indices: List[int], train: bool) -> torch.Tensor:
    """Inputs of `indices` as one batch, loaded in this process."""
    return torch.stack([source.item(i, train) for i in indices])


def _color_jitter(jitter: Optional[Jitter]):
    if jitter is None or not any(jitter):
        return None
    from torchvision import transforms as T

    return T.ColorJitter(*jitter)
