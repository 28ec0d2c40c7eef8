"""One builder for every registered model, `create()`, and the registration of the NetVLAD and GeM baselines."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from . import _registry
from ._registry import ModelEntry, get_aggregator, get_backbone, register_model
from .errors import NotPublishedError
from .input_norm import IMAGENET_MEAN, IMAGENET_STD, INPUT_NORMS, resolve_input_norm
from .model import VPRModel
from .whitening import PCAWhitening

# matconvnet VGG16 convention (NetVLAD/OpenIBL/ClusVPR): RGB on 0..255 minus the mean, no std scaling.
VGG_MATCONVNET_MEAN = (0.485, 0.458, 0.408)
VGG_MATCONVNET_STD = (1 / 255, 1 / 255, 1 / 255)
DEFAULT_INPUT_SIZE = (480, 640)
_HUB_KWARGS = ("cache_dir", "local_files_only", "token", "endpoint", "revision")
_REFERENCE_SUFFIXES = (".pth", ".tar", ".pt")


def build_vpr_model(
    architecture: str,
    backbone: str,
    aggregator: str,
    backbone_weights: Optional[str] = None,
    train_layers: Optional[str] = None,
    whitening_dim: Optional[int] = None,
    input_size: Tuple[int, int] = DEFAULT_INPUT_SIZE,
    mean: Tuple[float, ...] = VGG_MATCONVNET_MEAN,
    std: Tuple[float, ...] = VGG_MATCONVNET_STD,
    resize: str = "fixed",
    input_norm: str = "native",
    pretrained_cfg: Optional[Dict[str, Any]] = None,
    model_args: Optional[Dict[str, Any]] = None,
    **aggregator_args: Any,
) -> VPRModel:
    """Assemble backbone + aggregator (+ whitening) and attach the input config and the config.json facts.

    `mean`/`std` are the backbone's own normalisation; `input_norm="imagenet"` makes the model take ImageNet-
    normalised input instead (converted inside the model), and `input_config`/`pretrained_cfg` say so.
    """
    h, w = (int(v) for v in input_size)
    if resize not in ("fixed", "longer_side"):
        raise ValueError(f"resize must be 'fixed' or 'longer_side', got {resize!r}")
    bb_kwargs = {"weights": backbone_weights}
    if train_layers is not None:
        bb_kwargs["train_layers"] = train_layers
    bb = get_backbone(backbone)(**bb_kwargs)
    stride = getattr(bb, "stride", 16)
    agg_factory = get_aggregator(aggregator)
    if getattr(agg_factory, "takes_feature_size", False):
        aggregator_args["feature_size"] = (h // stride, w // stride)
    agg = agg_factory(bb.out_channels, **aggregator_args)
    whitening = PCAWhitening(agg.out_dim, whitening_dim) if whitening_dim else None
    mean, std, conversion = resolve_input_norm(input_norm, mean, std)
    input_config = {"input_size": (3, h, w), "mean": tuple(mean), "std": tuple(std), "resize": resize,
                    "interpolation": "bilinear"}
    cfg = dict(pretrained_cfg or {})
    cfg.update(input_size=[3, h, w], mean=list(mean), std=list(std))
    config = {
        "architecture": architecture,
        "model_args": dict(model_args or {}),
        "pretrained_cfg": cfg,
        "backbone": backbone,
        "aggregator": aggregator,
        "backbone_weights": "imagenet" if backbone_weights == "imagenet" else
        (Path(backbone_weights).name if backbone_weights else "random init"),
        "descriptor_dim": whitening_dim or agg.out_dim,
        "input_norm": input_norm,
    }
    return VPRModel(bb, agg, whitening, input_config, config, input_conversion=conversion)


def _default_source(entry: ModelEntry) -> str:
    repo = entry.pretrained_cfg.get("hf_hub_id")
    if not repo:
        raise NotPublishedError(
            f"no pretrained weights for {entry.name!r} have been published yet, so pretrained=True has nothing "
            f"to download. Get weights by training (python benchmarks/train.py --model {entry.name} ...), or pass "
            "pretrained='org/name[@revision]' or pretrained='path/to/dir' for a repository or folder you have."
        )
    rev = entry.pretrained_cfg.get("hf_hub_revision") or ""
    if not re.fullmatch(r"[0-9a-f]{40}", rev):
        raise ValueError(
            f"the default repository of {entry.name!r} ({repo}) is not pinned: set "
            "pretrained_cfg['hf_hub_revision'] to the 40-hex commit hash of the published weights"
        )
    return f"{repo}@{rev}"


def create(name: str, pretrained: Union[bool, str, os.PathLike] = False, **overrides: Any) -> VPRModel:
    """Build a registered model (eval mode); `pretrained` = True (default Hub repo, pinned), a repo, a dir or a checkpoint.

    `input_norm="imagenet"` makes the model take ImageNet-normalised input (see registry.input_norm);
    `descriptor_dim=k` keeps the k leading components of a fitted whitening (VPRModel.set_descriptor_dim).
    """
    entry = _registry.get_entry(name)
    descriptor_dim = overrides.pop("descriptor_dim", None)
    hub_kwargs = {k: overrides.pop(k) for k in _HUB_KWARGS if k in overrides}
    if pretrained is True:
        pretrained = _default_source(entry)
    if pretrained:
        src = str(pretrained)
        if src.endswith(_REFERENCE_SUFFIXES) and Path(src).is_file():
            if entry.reference_loader is None:
                raise ValueError(f"{entry.name!r} cannot load reference checkpoints; pass a Hub repo or directory")
            model = build(entry, overrides)
            entry.reference_loader(model, src, pca=overrides.get("pca"))
            return _with_descriptor_dim(model, descriptor_dim).eval()
        from . import hub

        model = hub.from_pretrained(src, architecture=entry.name, **hub_kwargs, **overrides)
        return _with_descriptor_dim(model, descriptor_dim).eval()
    return _with_descriptor_dim(build(entry, overrides), descriptor_dim).eval()


def _with_descriptor_dim(model: VPRModel, descriptor_dim: Optional[int]) -> VPRModel:
    """`descriptor_dim=` at load time: the leading whitening components (VPRModel.set_descriptor_dim)."""
    return model if descriptor_dim is None else model.set_descriptor_dim(descriptor_dim)


def build(entry: ModelEntry, overrides: Dict[str, Any]) -> VPRModel:
    """Call the entry's builder with its defaults overridden; config.json records only the overrides."""
    overrides = {k: v for k, v in overrides.items() if k != "pca"}
    args = {**entry.default_args, **overrides}
    recorded = {k: v for k, v in overrides.items() if k != "backbone_weights"}
    return entry.builder(
        architecture=entry.name, backbone=entry.backbone, aggregator=entry.aggregator,
        pretrained_cfg=entry.pretrained_cfg, model_args=recorded, **args,
    )


def model_info(name: str) -> Dict[str, Any]:
    """Facts about a registered model: backbone, aggregator, descriptor dim, input size, normalisation, weights."""
    entry = _registry.get_entry(name)
    args = entry.default_args
    h, w = args.get("input_size", DEFAULT_INPUT_SIZE)
    return {
        "name": entry.name,
        "backbone": entry.backbone,
        "aggregator": entry.aggregator,
        "descriptor_dim": entry.descriptor_dim,
        "whitening_dim": args.get("whitening_dim"),
        "input_size": (3, h, w),
        "mean": tuple(args.get("mean", VGG_MATCONVNET_MEAN)),
        "std": tuple(args.get("std", VGG_MATCONVNET_STD)),
        "input_norms": INPUT_NORMS,
        "weights": entry.pretrained_cfg.get("hf_hub_id") or "not published (train, or pass a repo/directory)",
        "description": entry.description,
    }


def pretrained_cfg(**extra: Any) -> Dict[str, Any]:
    """Defaults of a timm-style pretrained_cfg; hf_hub_id stays None until weights are published."""
    cfg = {"hf_hub_id": None, "hf_hub_revision": None, "license": "mit", "interpolation": "bilinear",
           "crop_pct": 1.0, "num_classes": 0}
    cfg.update(extra)
    return cfg


register_model(ModelEntry(
    "netvlad_vgg16", build_vpr_model, "vgg16", "netvlad",
    default_args={"num_clusters": 64, "whitening_dim": 4096}, descriptor_dim=4096,
    pretrained_cfg=pretrained_cfg(), description="NetVLAD (64 clusters) on VGG16 conv5_3, whitened to 4096-d",
), aliases=("netvlad",))
register_model(ModelEntry(
    "gem_vgg16", build_vpr_model, "vgg16", "gem",
    descriptor_dim=512, pretrained_cfg=pretrained_cfg(),
    description="GeM pooling (learnable p) on VGG16 conv5_3, 512-d",
), aliases=("gem",))
register_model(ModelEntry(
    "gem_resnet50", build_vpr_model, "resnet50", "gem",
    default_args={"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "train_layers": "layer3"}, descriptor_dim=1024,
    pretrained_cfg=pretrained_cfg(), description="GeM pooling (learnable p) on ResNet-50 layer3, 1024-d",
))
