"""--models entries -> models: registry names and aliases, Hub repos, local folders, NAME=SOURCE; provenance."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

import registry

_CHECKPOINT_SUFFIXES = (".pth", ".tar", ".pt")


@dataclass(frozen=True)
class ModelSpec:
    """One --models entry: a registry `name` built fresh, its `release` (tag) loaded, or a `source` loaded (with
    or without a name)."""

    label: str
    name: Optional[str] = None
    source: Optional[str] = None
    release: Optional[str] = None

    @property
    def pretrained(self) -> bool:
        return self.source is not None or self.release is not None


def _check_source(source: str) -> str:
    """An existing folder or reference checkpoint, or an `org/name[@rev]` repo id; ValueError saying what is wrong."""
    path = Path(source).expanduser()
    if path.is_file() and source.endswith(_CHECKPOINT_SUFFIXES):
        return str(path)
    from registry.hub import parse_source

    try:
        folder, _, _ = parse_source(source)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"model source {source!r}: {err}") from None
    return str(folder) if folder is not None else source


def parse_model(token: str, untrained: bool = False) -> ModelSpec:
    """Resolve one --models entry; ValueError with the valid choices when it names nothing.

    A registry name or alias loads its released weights (`name.tag` picks a release) unless `untrained`, which
    builds it fresh (random or off-the-shelf backbone, k-means centres)."""
    if "=" in token:
        name, source = (t.strip() for t in token.split("=", 1))
        try:
            canonical = registry.resolve_name(name)
        except KeyError as err:
            raise ValueError(f"{token!r}: {err.args[0]}") from None
        return ModelSpec(label=token, name=canonical, source=_check_source(source))
    try:
        name, tag = registry.split_tag(token)
    except KeyError as err:
        unknown = err.args[0]
    else:
        entry = registry.models._registry.get_entry(name)
        if untrained or not entry.releases:
            return ModelSpec(label=token, name=name)
        return ModelSpec(label=token, name=name, release=tag or entry.default_release)
    if "/" in token or Path(token).expanduser().exists():
        if Path(token).expanduser().is_file():
            raise ValueError(f"{token!r} is a file: give a reference checkpoint as NAME=PATH (e.g. clusvpr={token})")
        return ModelSpec(label=token, source=_check_source(token))
    raise ValueError(f"{unknown}; or give a Hub repo org/name[@rev], a local folder, or NAME=SOURCE")


def _load(spec: ModelSpec) -> registry.VPRModel:
    """Load a --models source: a release, the named registry model, or whatever its config.json says."""
    if spec.release is not None:
        return registry.create(f"{spec.name}.{spec.release}", pretrained=True)
    if spec.name is not None:
        return registry.create(spec.name, pretrained=spec.source)
    return registry.VPRModel.from_pretrained(spec.source)  # the architecture comes from the folder's or repo's config


def build_model(
    spec: ModelSpec, input_size: Optional[Tuple[int, int]], backbone_weights: Optional[str], seed: int
) -> registry.VPRModel:
    """A fresh model for one evaluation: built from the registry, or loaded and resized to `input_size`."""
    torch.manual_seed(seed)
    if not spec.pretrained:
        overrides: Dict[str, Any] = {}
        if input_size is not None:
            overrides["input_size"] = tuple(input_size)
        if backbone_weights is not None:
            overrides["backbone_weights"] = backbone_weights
        return registry.create(spec.name, **overrides)
    model = _load(spec)
    if input_size is not None:
        # loaded weights fix the architecture (OptLAD's exponent map is resampled to other sizes): resize inputs only
        model.input_config = {**model.input_config, "input_size": (3, *input_size)}
    return model


def weights_source(spec: ModelSpec, model: registry.VPRModel, backbone_weights: Optional[str],
                   clustered: bool) -> Tuple[str, bool]:
    """(where the weights came from, trained?) for the results table."""
    if spec.release is not None:
        where = model.config.get("source") or spec.release
        return f"release {spec.name}.{spec.release}: {where}", True
    if spec.pretrained:
        where = model.config.get("source") or spec.source
        if Path(spec.source).is_file():
            return f"reference checkpoint: {where}", True
        kind = "local dir" if Path(spec.source).is_dir() else "hub"
        # the trainer records its recipe in config.json ('training'); without it nothing says the weights were trained
        if model.config.get("training"):
            return f"{kind}: {where}", True
        return f"{kind}: {where} (no training recorded)", False
    centres = " + k-means centres" if clustered else ""
    if backbone_weights is None:
        return f"random init{centres} (untrained)" if clustered else "random init", False
    return f"off-the-shelf: {Path(backbone_weights).name}{centres} (untrained aggregator)", False


class Models:
    """The run's models, each built or loaded once (`get` builds it on first use; the runner loads the pretrained
    ones before any evaluation): every (model, dataset) evaluation gets its own copy, with the random state the
    build left, since an evaluation changes its model (centres, whitening, sizes, device)."""

    def __init__(self, input_size: Optional[Tuple[int, int]], backbone_weights: Optional[str], seed: int) -> None:
        self.input_size, self.backbone_weights, self.seed = input_size, backbone_weights, seed
        self._built: Dict[str, Tuple[registry.VPRModel, torch.Tensor]] = {}

    def load(self, spec: ModelSpec) -> None:
        """Build or load `spec`'s model now (a failure raises here), unless it already is."""
        if spec.label not in self._built:
            model = build_model(spec, self.input_size, self.backbone_weights, self.seed)
            self._built[spec.label] = model, torch.get_rng_state()

    def get(self, spec: ModelSpec) -> registry.VPRModel:
        """A copy of `spec`'s model, the random generators as a fresh build leaves them."""
        self.load(spec)
        model, state = self._built[spec.label]
        torch.manual_seed(self.seed)  # every device's generator, as build_model seeds them
        torch.set_rng_state(state)
        return copy.deepcopy(model)
