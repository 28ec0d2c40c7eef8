"""Building a registered model: the arguments that shape it, one call of its builder with them, and the one load
path of saved weights (`load_pretrained`: a config.json and a state dict, read and verified by the Hub layer, the
same build, strict loading), which `registry.create(name, pretrained=...)` and `VPRModel.from_pretrained` share."""
from __future__ import annotations

import functools
import inspect
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .._util.jsonio import quote
from .._util.ranges import check_args, ranges_for
from ..errors import NonFiniteValuesError
from ..hub import CARD_FACTS, Snapshot, read_cluster_source, read_state_dict
from ..hub.errors import IncompatibleWeightsError, WrongModelError
from ._registry import ModelEntry, get_aggregator, get_backbone, get_entry, lookup

# arguments of a builder that say where weights come from, or that the registry fills in: not the architecture
_NOT_ARCHITECTURE = ("architecture", "backbone", "aggregator", "backbone_weights", "pretrained_cfg", "model_args")
_AGGREGATOR_FILLED = ("self", "in_channels", "feature_size")


def _named_parameters(fn: Any, skip: Tuple[str, ...]) -> Tuple[List[str], bool]:
    """(keyword names of `fn` minus `skip`, whether it also takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


@functools.lru_cache(maxsize=None)
def _signature_args(builder: Any, aggregator_factory: Any) -> Tuple[str, ...]:
    """The architecture arguments of a (builder, aggregator factory) pair: their signatures inspected once."""
    names, passes_on = _named_parameters(builder, _NOT_ARCHITECTURE)
    if passes_on:
        names += _named_parameters(aggregator_factory, _AGGREGATOR_FILLED)[0]
    return tuple(sorted(set(names)))


def entry_args(entry: ModelEntry) -> List[str]:
    """`architecture_args` of a registry entry."""
    return list(_signature_args(entry.builder, get_aggregator(entry.aggregator)))


def architecture_args(name: str) -> List[str]:
    """Keyword arguments that shape model `name` (what config.json's `model_args` may hold): the builder's, and the
    aggregator's when the builder passes extra keywords on. Never where weights come from (`pretrained`,
    `backbone_weights`)."""
    return entry_args(get_entry(name))


def check_overrides(entry: ModelEntry, overrides: Mapping[str, Any], also: Iterable[str] = ()) -> None:
    """TypeError naming the keywords that are neither architecture arguments of `entry`, `backbone_weights`, `pca`
    (for reference checkpoints) nor one of `also`, with the valid ones."""
    valid = set(entry_args(entry)) | {"backbone_weights", *also}
    if entry.reference_loader is not None:
        valid.add("pca")
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"{entry.name} got unexpected argument(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(sorted(valid))} (and pretrained)")


def check_ranges(entry: ModelEntry, args: Mapping[str, Any], where: str, fix: str) -> None:
    """ValueError (WrongModelError for a config.json) naming an argument outside its documented range (the
    builder's and the aggregator's `arg_ranges`, registry._util.ranges), before anything is allocated."""
    try:
        check_args(args, ranges_for(get_backbone(entry.backbone), get_aggregator(entry.aggregator)), where, fix)
    except ValueError as err:
        if where.startswith("config.json"):
            raise WrongModelError(str(err)) from None
        raise


def build(entry: ModelEntry, overrides: Dict[str, Any], checked: Mapping[str, Any] = MappingProxyType({})) -> nn.Module:
    """Call the entry's builder with its defaults overridden by `checked` (arguments already checked against their
    ranges: a config.json's) and then `overrides` (each checked here first); config.json records both."""
    overrides = {k: v for k, v in overrides.items() if k != "pca"}
    check_ranges(entry, {k: v for k, v in overrides.items() if k != "backbone_weights"}, f"{entry.name} argument",
                 "Pass a value in that range")
    args = {**entry.default_args, **checked, **overrides}
    recorded = {k: v for k, v in {**checked, **overrides}.items() if k != "backbone_weights"}
    return entry.builder(
        architecture=entry.name, backbone=entry.backbone, aggregator=entry.aggregator,
        pretrained_cfg=entry.pretrained_cfg, model_args=recorded, **args,
    )


def config_entry(config: Mapping[str, Any], label: str, entry: Optional[ModelEntry] = None) -> ModelEntry:
    """The registry entry of the architecture a config.json names; WrongModelError when it is not registered, or
    when it is not `entry` (the model the caller asked for)."""
    stored = str(config["architecture"])
    shown = quote(stored)  # a crafted config may hold a very long name: quoted as its start and its length
    if entry is not None and entry.name != stored:
        raise WrongModelError(
            f"{label} holds a {shown} model, not {entry.name!r}: load it with "
            f"registry.create({shown}, pretrained=...) or VPRModel.from_pretrained(src) without architecture"
        )
    if entry is not None:
        return entry
    try:
        return lookup(stored)[0]
    except KeyError as err:
        known = str(err.args[0]).replace(repr(stored), shown)
        raise WrongModelError(f"{label} holds a {shown} model, which is not registered here ({quote(known, 600)}): "
                              "install or import the plugin that provides it") from None


def rebuild(
    config: Mapping[str, Any],
    label: str,
    *,
    entry: Optional[ModelEntry] = None,
    model_cls: Optional[type] = None,
    overrides: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """The untrained model a config.json describes (its `architecture` and `model_args`), in eval mode.

    `entry` (a registry entry) must be the one the config names; `model_cls` the class (or a base of the class)
    its builder makes; `overrides` change model arguments. `label` names the folder or repository in errors.
    """
    entry = config_entry(config, label, entry)
    overrides = dict(overrides or {})
    stored_args = config_model_args(config, entry, label)
    check_ranges(entry, stored_args, f"config.json of {label}, model_args",
                 "The file was changed or damaged (config.json carries no checksum): restore it, or re-save the "
                 "model with save_pretrained")
    check_overrides(entry, overrides)
    model = build(entry, overrides, checked=stored_args)
    if model_cls is not None and not isinstance(model, model_cls):
        made = type(model).__name__
        raise WrongModelError(
            f"{label} holds a {entry.name!r} model, which its registered builder makes as a {made}, not a "
            f"{model_cls.__name__}: load it with {made}.from_pretrained(...) or registry.create({entry.name!r}, "
            "pretrained=...)"
        )
    return model.eval()


def config_model_args(config: Mapping[str, Any], entry: ModelEntry, label: str) -> Dict[str, Any]:
    """config.json's `model_args`, which may only shape the architecture: a config never names other weights or
    files to load (`pretrained`, `backbone_weights`, ...), which could reach outside its folder or repository."""
    args = config.get("model_args") or {}
    if not isinstance(args, dict):
        raise WrongModelError(f"config.json of {label}: model_args must be an object, got {type(args).__name__}")
    valid = entry_args(entry)
    refused = sorted(set(args) - set(valid))
    if refused:
        raise WrongModelError(
            f"config.json of {label} sets model_args {quote(refused, 300)}, which are not architecture arguments of "
            f"{entry.name} (valid: {', '.join(valid)}); a repository's config may not name weights or files to "
            "load. Remove them from config.json, or re-save the model with save_pretrained"
        )
    return dict(args)


def load_pretrained(
    snap: Snapshot,
    *,
    entry: Optional[ModelEntry] = None,
    model_cls: Optional[type] = None,
    overrides: Optional[Dict[str, Any]] = None,
    descriptor_dim: Optional[int] = None,
    source: Optional[str] = None,
) -> nn.Module:
    """The model a layout holds: its config.json rebuilt (`rebuild`), model.safetensors loaded strictly, the
    centres of centroids.h5 and the card facts attached, then `finish`ed with `source` (default: the snapshot's
    label: the folder, or org/name@<commit>)."""
    config = snap.zoo_config()
    model = rebuild(config, snap.label, entry=entry, model_cls=model_cls, overrides=overrides)
    load_weights(model, read_state_dict(snap), snap.label, overridden=bool(overrides))
    clusters = read_cluster_source(snap)
    if clusters is not None:
        attach_cluster_source(model, clusters, snap.label)
    for key in CARD_FACTS:
        if key in config:
            model.config[key] = config[key]
    return finish(model, descriptor_dim, source or snap.label)


def finish(model: nn.Module, descriptor_dim: Optional[int] = None, source: Optional[str] = None) -> nn.Module:
    """The last step of every load: `source` (where the weights came from) recorded in config, `descriptor_dim=`
    applied (the leading whitening components: VPRModel.set_descriptor_dim), eval mode."""
    if source is not None:
        model.config["source"] = source
    if descriptor_dim is not None:
        model.set_descriptor_dim(descriptor_dim)
    return model.eval()


def load_weights(model: nn.Module, state: Mapping[str, Any], label: str, overridden: bool = False) -> None:
    """Load `state` into `model` strictly: IncompatibleWeightsError naming the missing and unexpected keys, or the
    shapes that differ. `overridden` says whether the caller changed model arguments (the likely cause)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    hint = ("drop the overrides passed to from_pretrained, which change the architecture" if overridden else
            "the repository was written by a different version of this model; build it with the matching version")
    name = getattr(model, "name", type(model).__name__)
    if missing or unexpected:
        raise IncompatibleWeightsError(
            f"model.safetensors of {label} does not fit {name}: missing {_head(missing)}, "
            f"unexpected {_head(unexpected)}; {hint}"
        )
    check_finite(state, f"model.safetensors of {label}")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as err:
        raise IncompatibleWeightsError(f"model.safetensors of {label} does not fit {name}: {err}; {hint}") from None


def attach_cluster_source(model: nn.Module, source: Tuple[torch.Tensor, torch.Tensor], label: str) -> None:
    """Give the loaded model's aggregator the (centroids, descriptors) of its layout's centroids.h5, so that saving
    it again writes the same file; WrongModelError when the aggregator keeps no such centres or their shape differs."""
    aggregator = getattr(model, "aggregator", None)
    expected = getattr(aggregator, "centroids", None)
    name = getattr(model, "name", type(model).__name__)
    if not hasattr(aggregator, "cluster_source") or expected is None:
        raise WrongModelError(f"centroids.h5 of {label} holds cluster centres, but the aggregator of {name} keeps "
                              "none: remove the file and its entry in config.json, or load the model it was saved from")
    if tuple(source[0].shape) != tuple(expected.shape):
        raise WrongModelError(f"centroids.h5 of {label} holds centres of shape {tuple(source[0].shape)}, but {name} "
                              f"has {tuple(expected.shape)}: the file belongs to another model; restore the layout's "
                              "own copy or re-save the model with save_pretrained")
    aggregator.cluster_source = source


def check_finite(state: Mapping[str, Any], what: str) -> None:
    """NonFiniteValuesError naming `what` (the file) and its tensors that hold NaN or Inf (one isfinite pass per
    floating-point tensor), so damaged weights never give NaN descriptors silently."""
    bad = {key: int((~torch.isfinite(t)).sum()) for key, t in state.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())}
    if bad:
        listed = ", ".join(f"{key} ({n} of {state[key].numel()} values)" for key, n in list(bad.items())[:6])
        raise NonFiniteValuesError(
            f"{what} holds NaN or Inf values in {len(bad)} tensor(s): {listed}{', ...' if len(bad) > 6 else ''}: "
            "the file is damaged or comes from a diverged training run (its sha256 cannot tell a file saved that "
            "way); restore a good copy or re-save a model whose weights are finite"
        )


def _head(keys: list, n: int = 6) -> str:
    return "[]" if not keys else "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
