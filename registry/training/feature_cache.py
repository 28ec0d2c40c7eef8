"""Cache the outputs of a backbone's frozen leading layers once per image (conv1..conv4 of VGG16).

Epochs then run only the trainable layers (conv5 + aggregator), which makes CPU training affordable.
The images are encoded once, so cached training has no colour jitter. The cache file is keyed by the
frozen weights, the input config and the images' bytes, so a stale cache is never reused and a moved or
re-copied dataset still finds its cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .._util.atomic import atomic_path
from .._util.distributed import DistContext, sharded_apply
from .._util.files import sha256_file
from ..errors import NonFiniteValuesError
from ..models.backbones import backbone_stages
from .sources import CachedSource, ImageSource

PathLike = Union[str, os.PathLike]


def frozen_cut(backbone: nn.Module) -> int:
    """Index of the first backbone layer with a trainable parameter (all layers before it are frozen)."""
    stages = backbone_stages(backbone)
    cut = next((i for i, layer in enumerate(stages) if any(p.requires_grad for p in layer.parameters())), len(stages))
    if cut == 0:
        raise ValueError(
            "the whole backbone trains, so there are no frozen layers to cache: pass --train-layers conv5 "
            "(VGG16) / layer3 (ResNet-50), or train without --cache-features"
        )
    return cut


def _prefix(backbone: nn.Module, cut: int) -> nn.Sequential:
    return nn.Sequential(*backbone_stages(backbone)[:cut])


def cache_key(backbone: nn.Module, cut: int, input_config: dict, paths: Sequence[PathLike]) -> str:
    """sha256 over the frozen weights, the input config and the image files' contents, in order."""
    h = hashlib.sha256()
    for name, t in _prefix(backbone, cut).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in input_config.items()},
                        sort_keys=True).encode())
    for p in paths:  # the bytes, in order: a copied or re-checked-out dataset (new paths, new mtimes) reuses it
        h.update(_file_digest(p).encode() + b"\n")
    return h.hexdigest()


def _file_digest(path: PathLike) -> str:
    """sha256 of a file's bytes ('missing' when absent: loading the image will name the problem)."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return "missing"


@torch.no_grad()
def encode_prefix(
    model: nn.Module,
    paths: Sequence[PathLike],
    cut: int,
    ctx: DistContext,
    batch_size: int = 32,
    desc: str = "caching features",
    progress: bool = True,
) -> torch.Tensor:
    """(N, C, h, w) float32 outputs of backbone layers [0, cut) for image files, sharded over ranks."""
    source = ImageSource(paths, model.input_config)
    prefix = _prefix(model.backbone, cut).to(ctx.device)
    was_training = prefix.training
    prefix.eval()

    def run(batch: Sequence[int]) -> torch.Tensor:
        x = torch.stack([source.item(i, train=False) for i in batch]).to(ctx.device)
        return prefix(model.to_native(x)).float().cpu()

    try:
        return sharded_apply(run, range(len(paths)), ctx, batch_size, desc=desc, progress=progress)
    finally:
        prefix.train(was_training)


def cached_source(
    model: nn.Module,
    paths: Sequence[PathLike],
    cache_dir: Optional[PathLike],
    ctx: DistContext,
    batch_size: int = 32,
    num_workers: int = 0,
    desc: str = "caching features",
    progress: bool = True,
) -> CachedSource:
    """A CachedSource for `paths`: read from `cache_dir` when a matching file is there, else computed (and saved)."""
    cut = frozen_cut(model.backbone)
    path: Optional[Path] = None
    if cache_dir is not None:
        key = cache_key(model.backbone, cut, model.input_config, paths)
        path = Path(cache_dir) / f"features-{key[:20]}.npy"
        if path.is_file():
            feats = torch.from_numpy(np.load(path))
            if len(feats) == len(paths):
                if not bool(torch.isfinite(feats).all()):
                    raise NonFiniteValuesError(
                        f"the feature cache {path} holds NaN or Inf values ({int((~torch.isfinite(feats)).sum())} "
                        f"of {feats.numel()}): it is damaged; delete it and the next run computes it again"
                    )
                return CachedSource(feats, cut, num_workers)
    feats = encode_prefix(model, paths, cut, ctx, batch_size, desc, progress)
    if path is not None and ctx.is_main:
        _save(path, feats.numpy())
    ctx.barrier()
    return CachedSource(feats, cut, num_workers)


def _save(path: Path, array: np.ndarray) -> None:
    """np.save through an atomic temporary file (a killed run never leaves half a cache)."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
    except OSError as err:
        raw = err.__cause__ if getattr(err, "atomic_target", None) is not None else err  # atomic_path's rewording
        raise OSError(err.errno, f"could not write the feature cache {path} ({getattr(raw, 'strerror', None) or raw});"
                                 " free disk space or pass another --cache-features folder") from err
