"""One builder for every registered model, `create()`, and the registration of the NetVLAD and GeM baselines."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .. import hub
from .._util.jsonio import read_json
from .._util.ranges import min_side
from ..hub.errors import WrongModelError
from ..whitening import PCAWhitening
from . import _registry
from ._build import architecture_args as architecture_args  # public here: the timm plugin imports it
from ._build import build, check_finite, check_overrides, finish, load_pretrained
from ._registry import ModelEntry, Release, find_releases, get_aggregator, get_backbone, register_model
from .input_norm import IMAGENET_MEAN, IMAGENET_STD, INPUT_NORMS, resolve_input_norm
from .model import VPRModel

# matconvnet VGG16 convention (NetVLAD/OpenIBL/ClusVPR): RGB on 0..255 minus the mean, no std scaling.
VGG_MATCONVNET_MEAN = (0.485, 0.458, 0.408)
VGG_MATCONVNET_STD = (1 / 255, 1 / 255, 1 / 255)
DEFAULT_INPUT_SIZE = (480, 640)
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
    if whitening_dim is not None and (isinstance(whitening_dim, bool) or int(whitening_dim) < 1):
        raise ValueError(f"whitening_dim must be >= 1, or None for no whitening; got {whitening_dim!r}")
    bb_kwargs = {"weights": backbone_weights}
    if train_layers is not None:
        bb_kwargs["train_layers"] = train_layers
    agg_factory = get_aggregator(aggregator)
    stride, min_map = getattr(get_backbone(backbone), "stride", 16), getattr(agg_factory, "min_feature_size", 1)
    if h // stride < min_map or w // stride < min_map:
        side = stride * min_map
        raise ValueError(f"input_size {(h, w)} is too small for {architecture}: its {backbone} backbone downsamples "
                         f"by {stride} and its {aggregator} aggregator needs a feature map of at least {min_map}x"
                         f"{min_map}, so both sides must be >= {side}")
    bb = get_backbone(backbone)(**bb_kwargs)
    stride = getattr(bb, "stride", 16)
    if getattr(agg_factory, "takes_feature_size", False):
        aggregator_args["feature_size"] = (h // stride, w // stride)
    agg = agg_factory(bb.out_channels, **aggregator_args)
    whitening = PCAWhitening(agg.out_dim, int(whitening_dim)) if whitening_dim else None
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


def create(name: str, pretrained: Union[bool, str, os.PathLike] = False, **overrides: Any) -> VPRModel:
    """Build a registered model (eval mode).

    `name` may carry a release tag (`clusvpr_vgg16.nordland`); `pretrained` = True (the tag's release, else the
    model's default release: its pinned Hub repository when published, else the copy bundled in the package), a
    Hub repo `org/name[@rev]`, a local directory in the Hub layout, or a reference checkpoint. The Hub keywords
    (`revision`, `cache_dir`, `local_files_only`, `token`, `endpoint`, `force_download`) apply to a repository.

    `input_norm="imagenet"` makes the model take ImageNet-normalised input (see registry.models.input_norm);
    `descriptor_dim=k` keeps the k leading components of a fitted whitening (VPRModel.set_descriptor_dim).
    """
    entry, tag = _registry.lookup(name)
    descriptor_dim = overrides.pop("descriptor_dim", None)
    check_overrides(entry, overrides, also=hub.HUB_KWARGS)
    hub_kwargs = {k: overrides.pop(k) for k in hub.HUB_KWARGS if k in overrides}
    if pretrained is True:
        release = entry.release(tag)
        snap = hub.Snapshot(release.location, **hub_kwargs)
        source = None if release.hub else f"bundled:{entry.name}.{release.tag}"
        return load_pretrained(snap, entry=entry, model_cls=VPRModel, overrides=overrides,
                               descriptor_dim=descriptor_dim, source=source)
    if not pretrained:  # with a tag: the release's architecture (input size, whitening), untrained
        args = {**release_model_args(entry.release(tag)), **overrides} if tag is not None else overrides
        return finish(build(entry, args), descriptor_dim)
    src = str(pretrained)
    if src.endswith(_REFERENCE_SUFFIXES) and Path(src).is_file():
        if entry.reference_loader is None:
            raise ValueError(f"{entry.name!r} cannot load reference checkpoints; pass a Hub repo or directory")
        model = build(entry, overrides)
        entry.reference_loader(model, src, pca=overrides.get("pca"))
        check_finite(model.state_dict(), f"the reference checkpoint {src}")
        return finish(model, descriptor_dim)
    return load_pretrained(hub.Snapshot(src, **hub_kwargs), entry=entry, model_cls=VPRModel, overrides=overrides,
                           descriptor_dim=descriptor_dim)


def min_input_side(name: str) -> int:
    """The smallest image side model `name` takes, read from its entry without building it: the stride of its
    backbone times the smallest feature map its aggregator declares (`min_feature_size`, 1 when it declares none)."""
    entry = _registry.get_entry(name)
    return min_side(get_backbone(entry.backbone), get_aggregator(entry.aggregator))


def release_model_args(release: Release) -> Dict[str, Any]:
    """The architecture arguments recorded in a bundled release's config.json (empty for a Hub-only release)."""
    if release.folder is None:
        return {}
    return dict(_bundled_model_args(str(release.folder)))


@functools.lru_cache(maxsize=None)
def _bundled_model_args(folder: str) -> Tuple[Tuple[str, Any], ...]:
    """A bundled release's recorded model_args, read once per process (the folder ships inside the package)."""
    config = read_json(Path(folder) / "config.json", f"config.json of the bundled release {folder}",
                       error=WrongModelError, fix="the release folder is damaged: reinstall the package")
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in (config.get("model_args") or {}).items())


def model_info(name: str) -> Dict[str, Any]:
    """Facts about a registered model: backbone, aggregator, descriptor dim, input size, normalisation, weights."""
    base, tag = _registry.split_tag(name)
    entry = _registry.get_entry(base)
    args = entry.default_args
    h, w = args.get("input_size", DEFAULT_INPUT_SIZE)
    releases = {f"{entry.name}.{t}": _release_info(r) for t, r in sorted(entry.releases.items())}
    default = f"{entry.name}.{tag or entry.default_release}" if entry.releases else None
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
        "weights": (f"{default}: {releases[default]['trained_on']} ({releases[default]['source']})" if default
                    else "not released (train, or pass a repo/directory)"),
        "default_release": default,
        "releases": releases,
        "description": entry.description,
    }


def _release_info(release: Release) -> Dict[str, Any]:
    return {"trained_on": release.trained_on or "not recorded",
            "source": release.hub or f"bundled in the package ({release.folder})",
            "model_args": release_model_args(release)}


RELEASES_DIR = Path(__file__).resolve().parent.parent / "releases"
NETVLAD_CITATION = """@inproceedings{arandjelovic2016netvlad,
  title     = {{NetVLAD}: {CNN} architecture for weakly supervised place recognition},
  author    = {Arandjelovi{\\'c}, Relja and Gronat, Petr and Torii, Akihiko and Pajdla, Tomas and Sivic, Josef},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2016}
}"""
GEM_CITATION = """@article{radenovic2019gem,
  title   = {Fine-tuning {CNN} Image Retrieval with No Human Annotation},
  author  = {Radenovi{\\'c}, Filip and Tolias, Giorgos and Chum, Ond{\\v{r}}ej},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  year    = {2019}
}"""


def pretrained_cfg(**extra: Any) -> Dict[str, Any]:
    """Defaults of a timm-style pretrained_cfg; hf_hub_id stays None until weights are published."""
    cfg = {"hf_hub_id": None, "hf_hub_revision": None, "license": "mit", "interpolation": "bilinear",
           "crop_pct": 1.0, "num_classes": 0}
    cfg.update(extra)
    return cfg


register_model(ModelEntry(
    "netvlad_vgg16", build_vpr_model, "vgg16", "netvlad",
    default_args={"num_clusters": 64, "whitening_dim": 4096}, descriptor_dim=4096,
    pretrained_cfg=pretrained_cfg(), releases=find_releases(RELEASES_DIR, "netvlad_vgg16"),
    description="NetVLAD (64 clusters) on VGG16 conv5_3, whitened to 4096-d", citation=NETVLAD_CITATION,
), aliases=("netvlad",))
register_model(ModelEntry(
    "gem_vgg16", build_vpr_model, "vgg16", "gem",
    descriptor_dim=512, pretrained_cfg=pretrained_cfg(), releases=find_releases(RELEASES_DIR, "gem_vgg16"),
    description="GeM pooling (learnable p) on VGG16 conv5_3, 512-d", citation=GEM_CITATION,
), aliases=("gem",))
register_model(ModelEntry(
    "gem_resnet50", build_vpr_model, "resnet50", "gem",
    default_args={"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "train_layers": "layer3"}, descriptor_dim=1024,
    pretrained_cfg=pretrained_cfg(), description="GeM pooling (learnable p) on ResNet-50 layer3, 1024-d",
    citation=GEM_CITATION,
))
