"""Cluster initialisation: local descriptors of training images -> faiss k-means -> alpha init.

Descriptors are sampled in the space the aggregator's assignment sees (`aggregator.local_descriptors`:
normalised conv5_3 for NetVLAD, OptLAD's grouped 128-d space for ClusVPR) and written with the centres
to `centroids.h5` (keys `centroids`, `descriptors`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._util import h5io
from .._util.distributed import DistContext
from .._util.options import field_default
from .config import TrainConfig
from .sources import Source, stack_items

PathLike = Union[str, os.PathLike]
# the trainer's defaults (TrainConfig.cluster_descriptors / cluster_per_image), for callers from Python
DEFAULT_DESCRIPTORS = field_default(TrainConfig, "cluster_descriptors")
DEFAULT_PER_IMAGE = field_default(TrainConfig, "cluster_per_image")


class ClustersNotInitialisedError(RuntimeError):
    """Training a cluster-based aggregator whose centres and assignment were never initialised."""


def has_clusters(aggregator: nn.Module) -> bool:
    """True for aggregators with cluster centres (NetVLAD, OptLAD/ClusVPR)."""
    return callable(getattr(aggregator, "init_from_clusters", None))


def clusters_initialised(aggregator: nn.Module) -> bool:
    """No clusters to initialise, or `init_from_clusters` has run (its inputs are kept on `cluster_source`)."""
    return not has_clusters(aggregator) or getattr(aggregator, "cluster_source", None) is not None


def require_clusters(model: nn.Module, model_name: str = "the model") -> None:
    """Refuse to train an aggregator whose clusters were never initialised, saying how to initialise them."""
    if not clusters_initialised(model.aggregator):
        raise ClustersNotInitialisedError(
            f"{model_name}'s {type(model.aggregator).__name__} clusters are not initialised: training from random "
            "centres and assignment weights does not converge to a useful model. Run the cluster initialisation "
            "first: `vpr train` does it unless --clusters is given (--clusters PATH loads a centroids.h5); "
            "from Python call registry.training.init_clusters(model, source, output/'centroids.h5'), or load "
            "trained weights (pretrained=...) and pass require_clusters=False"
        )


def _per_image(local: torch.Tensor, n_images: int) -> torch.Tensor:
    """(N, D, H, W) maps or (N*M, D) rows -> (N, M, D) descriptors per image."""
    if local.ndim == 4:
        return local.flatten(2).transpose(1, 2)
    if local.ndim == 2 and local.shape[0] % n_images == 0:
        return local.view(n_images, -1, local.shape[1])
    raise ValueError(f"aggregator.local_descriptors gave shape {tuple(local.shape)} for {n_images} images; expected "
                     "(N, D, H, W) or (N*M, D)")


@torch.no_grad()
def sample_local_descriptors(
    model: nn.Module,
    source: Source,
    indices: Sequence[int],
    per_image: int,
    rng: np.random.Generator,
    device: Optional[torch.device] = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """`per_image` random local descriptors from each listed image, as the assignment sees them: (N, D) float32."""
    was_training = model.training
    device = device or next(model.parameters()).device
    model.eval().to(device)
    out = []
    try:
        for start in range(0, len(indices), batch_size):
            batch = list(indices[start : start + batch_size])
            x = stack_items(source, batch, train=False).to(device)
            local = _per_image(model.aggregator.local_descriptors(source.features(model, x)).float(), len(batch))
            for desc in local.cpu():
                pick = rng.choice(len(desc), size=min(per_image, len(desc)), replace=False)
                out.append(desc[np.sort(pick)])
    finally:
        model.train(was_training)
    return torch.cat(out)


def kmeans(descriptors: torch.Tensor, k: int, niter: int = 100, seed: int = 0) -> torch.Tensor:
    """faiss k-means centres (k, D) of (N, D) descriptors."""
    import faiss

    x = np.ascontiguousarray(descriptors.numpy(), dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means with {k} clusters needs at least {k} descriptors, got {len(x)}: sample more "
                         "images or descriptors per image")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False, gpu=faiss.get_num_gpus() > 0)
    km.train(x)
    return torch.from_numpy(np.ascontiguousarray(km.centroids, dtype=np.float32))


def init_clusters(
    model: nn.Module,
    source: Source,
    output: PathLike,
    indices: Optional[Sequence[int]] = None,
    num_descriptors: int = DEFAULT_DESCRIPTORS,
    per_image: int = DEFAULT_PER_IMAGE,
    niter: int = 100,
    seed: int = 0,
    ctx: Optional[DistContext] = None,
) -> Optional[float]:
    """Sample, cluster, write `output` (centroids.h5) and initialise the aggregator; returns alpha (None: no clusters).

    Images are drawn at random from `indices` (default: every item of `source`), ceil(num_descriptors /
    per_image) of them. Under torch.distributed rank 0 computes and writes; the other ranks read the file.
    """
    agg = model.aggregator
    if not has_clusters(agg):
        return None
    ctx = ctx or DistContext()
    output = Path(output)
    if ctx.is_main:
        rng = np.random.default_rng(seed)
        pool = np.arange(len(source)) if indices is None else np.asarray(indices)
        n_images = min(len(pool), -(-num_descriptors // per_image))
        chosen = np.sort(rng.choice(pool, size=n_images, replace=False))
        descs = sample_local_descriptors(model, source, chosen.tolist(), per_image, rng, ctx.device)
        h5io.save_centroids(output, kmeans(descs, agg.num_clusters, niter, seed), descs)
    ctx.barrier()
    return load_clusters(model, output)


def load_clusters(model: nn.Module, path: PathLike) -> float:
    """Initialise the aggregator from a centroids.h5 (centres + sampled descriptors); returns alpha."""
    centroids, descriptors = h5io.load_centroids(path)
    agg = model.aggregator
    if not has_clusters(agg):
        raise ValueError(f"{type(agg).__name__} has no clusters to initialise from {path}")
    if tuple(centroids.shape) != tuple(agg.centroids.shape):
        raise ValueError(f"{path} holds centres of shape {tuple(centroids.shape)} but the aggregator needs "
                         f"{tuple(agg.centroids.shape)}: cluster again for this model (omit --clusters)")
    device = agg.centroids.device
    return agg.init_from_clusters(centroids.to(device), descriptors.to(device))


def attach_cluster_source(aggregator: nn.Module, path: PathLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """Record a centroids.h5 as the aggregator's cluster source without touching its (trained) weights."""
    return set_cluster_source(aggregator, h5io.load_centroids(path))


def set_cluster_source(
    aggregator: nn.Module, source: Tuple[torch.Tensor, torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Record (centroids, descriptors) as the cluster source (what centroids.h5 is written from); weights untouched."""
    for module in aggregator.modules():
        if "cluster_source" in vars(module):
            module.cluster_source = source
            return source
    raise ValueError(f"{type(aggregator).__name__} keeps no cluster_source")
