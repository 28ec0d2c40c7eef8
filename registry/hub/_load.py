"""Pull: the verified weights of a layout as a state dict, and its centres or PCA alone.

Rebuilding a model from config.json is the model layer's (`registry.VPRModel.from_pretrained`): the Hub layer
never imports it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import torch

from .._util import h5io
from .._util.jsonio import check_safetensors_header
from ..whitening import PCAWhitening
from ._layout import CENTROIDS, PCA, WEIGHTS
from ._source import HUB_KWARGS, ModelLocation, Snapshot
from .errors import IncompatibleWeightsError

_H5_SUFFIXES = (".h5", ".hdf5")


def read_state_dict(snap: Snapshot) -> Dict[str, torch.Tensor]:
    """model.safetensors of `snap`, sha256-checked, as CPU tensors (safetensors never unpickles code)."""
    from safetensors.torch import load_file

    path = snap.path(WEIGHTS)
    check_safetensors_header(path, error=IncompatibleWeightsError)  # named error, not a bare SafetensorError
    return load_file(str(path), device="cpu")


def read_cluster_source(snap: Snapshot) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(centroids, descriptors) of `snap`'s centroids.h5, sha256-checked; None when config.json lists none."""
    files = snap.zoo_config().get("files") or {}
    return h5io.load_centroids(snap.path(CENTROIDS)) if CENTROIDS in files else None


def pull_centroids(src: ModelLocation, **hub_kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """(centroids K x D, descriptors N x D) from a repo's or folder's centroids.h5, or from an .h5 file itself.

    Use them to start a fresh NetVLAD or OptLAD: `model.aggregator.init_from_clusters(*pull_centroids(src))`.
    """
    if _is_h5_file(src):
        return h5io.load_centroids(src)
    return h5io.load_centroids(_pull_file(src, CENTROIDS, hub_kwargs))


def pull_pca(src: ModelLocation, **hub_kwargs: Any) -> PCAWhitening:
    """The fitted PCAWhitening in a repo's or folder's pca.h5, or in an .h5 file itself (reference layout too)."""
    if _is_h5_file(src):
        return PCAWhitening.from_h5(src)
    return PCAWhitening.from_h5(_pull_file(src, PCA, hub_kwargs))


def _is_h5_file(src: ModelLocation) -> bool:
    return str(src).lower().endswith(_H5_SUFFIXES) and os.path.isfile(src)


def _pull_file(src: ModelLocation, name: str, hub_kwargs: dict):
    unknown = sorted(set(hub_kwargs) - set(HUB_KWARGS))
    if unknown:
        raise TypeError(f"unexpected arguments {unknown}; pull functions take {sorted(HUB_KWARGS)}")
    return Snapshot(src, **hub_kwargs).path(name)
