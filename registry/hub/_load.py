"""Pull: rebuild a model from config.json and load model.safetensors strictly; pull centres or PCA alone."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

import torch

from .. import h5io
from ..whitening import PCAWhitening
from ._layout import CARD_FACTS, CENTROIDS, PCA, WEIGHTS
from ._source import Snapshot, SourceLike
from .errors import IncompatibleWeightsError, WrongModelError

if TYPE_CHECKING:
    from ..model import VPRModel

_H5_SUFFIXES = (".h5", ".hdf5")


def from_pretrained(
    src: SourceLike,
    *,
    architecture: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[SourceLike] = None,
    local_files_only: bool = False,
    token: Optional[Union[str, bool]] = None,
    endpoint: Optional[str] = None,
    **overrides: Any,
) -> "VPRModel":
    """Load a VPRModel from `org/name`, `org/name@<commit or tag>` or a folder; every file is sha256-checked.

    `architecture` (a registry name) makes loading fail unless the repository holds that model; `overrides`
    change model arguments recorded in config.json (loading stays strict, so they must keep the weights' shapes),
    except `descriptor_dim`, applied after loading (the leading components of the stored whitening).
    """
    import registry

    descriptor_dim = overrides.pop("descriptor_dim", None)
    snap = Snapshot(src, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                    token=token, endpoint=endpoint)
    config = snap.zoo_config()
    stored = config["architecture"]
    if architecture is not None and registry.resolve_name(architecture) != stored:
        raise WrongModelError(
            f"{snap.label} holds a {stored!r} model, not {architecture!r}: load it with "
            f"registry.create({stored!r}, pretrained=...) or VPRModel.from_pretrained(src) without architecture"
        )
    try:
        registry.resolve_name(stored)
    except KeyError as err:
        raise WrongModelError(f"{snap.label} holds a {stored!r} model, which is not registered here ({err.args[0]}): "
                              "install or import the plugin that provides it") from None
    model = registry.create(stored, **{**_architecture_args(config, stored, snap.label), **overrides})
    _load_weights(model, snap, bool(overrides))
    for key in CARD_FACTS:
        if key in config:
            model.config[key] = config[key]
    model.config["source"] = snap.label  # where the weights came from: a folder or org/name@<commit>
    if descriptor_dim is not None:
        model.set_descriptor_dim(descriptor_dim)
    return model.eval()


def _architecture_args(config: dict, architecture: str, label: str) -> dict:
    """config.json's `model_args`, which may only shape the architecture: a config never names other weights or
    files to load (`pretrained`, `backbone_weights`, ...), which could reach outside its folder or repository."""
    from ..factory import architecture_args

    args = config.get("model_args") or {}
    if not isinstance(args, dict):
        raise WrongModelError(f"config.json of {label}: model_args must be an object, got {type(args).__name__}")
    valid = architecture_args(architecture)
    refused = sorted(set(args) - set(valid))
    if refused:
        raise WrongModelError(
            f"config.json of {label} sets model_args {refused}, which are not architecture arguments of "
            f"{architecture} (valid: {', '.join(valid)}); a repository's config may not name weights or files to "
            "load. Remove them from config.json, or re-save the model with save_pretrained"
        )
    return args


def _load_weights(model: torch.nn.Module, snap: Snapshot, overridden: bool) -> None:
    """Strict load of model.safetensors (safetensors never unpickles code)."""
    from safetensors.torch import load_file

    state = load_file(str(snap.path(WEIGHTS)), device="cpu")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    hint = ("drop the overrides passed to from_pretrained, which change the architecture" if overridden else
            "the repository was written by a different version of this model; build it with the matching version")
    if missing or unexpected:
        raise IncompatibleWeightsError(
            f"model.safetensors of {snap.label} does not fit {model.name}: missing {_head(missing)}, "
            f"unexpected {_head(unexpected)}; {hint}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as err:
        raise IncompatibleWeightsError(f"model.safetensors of {snap.label} does not fit {model.name}: {err}; "
                                       f"{hint}") from None


def _head(keys: list, n: int = 6) -> str:
    return "[]" if not keys else "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


def pull_centroids(src: SourceLike, **hub_kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """(centroids K x D, descriptors N x D) from a repo's or folder's centroids.h5, or from an .h5 file itself.

    Use them to start a fresh NetVLAD or OptLAD: `model.aggregator.init_from_clusters(*pull_centroids(src))`.
    """
    if _is_h5_file(src):
        return h5io.load_centroids(src)
    return h5io.load_centroids(_pull_file(src, CENTROIDS, hub_kwargs))


def pull_pca(src: SourceLike, **hub_kwargs: Any) -> PCAWhitening:
    """The fitted PCAWhitening in a repo's or folder's pca.h5, or in an .h5 file itself (reference layout too)."""
    if _is_h5_file(src):
        return PCAWhitening.from_h5(src)
    return PCAWhitening.from_h5(_pull_file(src, PCA, hub_kwargs))


def _is_h5_file(src: SourceLike) -> bool:
    return str(src).lower().endswith(_H5_SUFFIXES) and os.path.isfile(src)


def _pull_file(src: SourceLike, name: str, hub_kwargs: dict):
    allowed = {"revision", "cache_dir", "local_files_only", "token", "endpoint"}
    unknown = sorted(set(hub_kwargs) - allowed)
    if unknown:
        raise TypeError(f"unexpected arguments {unknown}; pull functions take {sorted(allowed)}")
    return Snapshot(src, **hub_kwargs).path(name)
