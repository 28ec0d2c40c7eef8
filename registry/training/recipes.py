"""Training recipes: how a batch of tuples becomes a loss. `global` fits every model; plugins add their own.

A batch holds B tuples of T inputs each, in the order: anchor, positive, neg_num negatives, then
pos_num difficult positives when the recipe asks for them in that generation.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models._registry import load_entry_point_group
from .config import TrainConfig
from .losses import hard_loss
from .sources import Source

Parts = Dict[str, float]


class GlobalRecipe:
    """Hard loss (SARE or triplet) on global descriptors; one generation, no teacher (NetVLAD, GeM, ...)."""

    name = "global"
    supports_generations = False

    def uses_difficult(self, generation: int) -> bool:
        """Whether tuples carry difficult positives in this generation."""
        return False

    def uses_teacher(self, generation: int) -> bool:
        """Whether this generation trains against a frozen teacher."""
        return False

    def loss(self, model: nn.Module, teacher: Optional[nn.Module], source: Source, inputs: torch.Tensor,
             cfg: TrainConfig, generation: int) -> Tuple[torch.Tensor, Parts]:
        """Loss of a batch (B, T, ...) of tuples."""
        b, t = inputs.shape[:2]
        desc = global_descriptors(model, source, inputs.flatten(0, 1)).view(b, t, -1)
        hard = hard_loss(cfg.loss)(desc[:, 0], desc[:, 1], desc[:, 2 : 2 + cfg.neg_num],
                                   temperature=cfg.temperature(0), margin=cfg.margin)
        return hard, {"hard": float(hard.detach())}


def global_descriptors(model: nn.Module, source: Source, inputs: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 descriptors before whitening (what training and validation rank by)."""
    return F.normalize(model.aggregator(source.features(model, inputs)).float(), dim=-1)


RECIPE_GROUP = "vpr_registry.recipes"
_RECIPES: Dict[str, Callable[[], object]] = {"global": GlobalRecipe}
_DEFAULT_FOR: Dict[str, str] = {}
_plugins_loaded = False


def register_recipe(name: str, factory: Callable[[], object], aggregators: Tuple[str, ...] = (),
                    overwrite: bool = False) -> None:
    """Register a recipe; it becomes the default ('auto') for models built with the listed aggregators."""
    if name in _RECIPES and not overwrite:
        raise ValueError(f"recipe {name!r} is already registered; pass overwrite=True to replace it")
    _RECIPES[name] = factory
    for agg in aggregators:
        _DEFAULT_FOR[agg] = name


def list_recipes() -> Dict[str, str]:
    """Recipe name -> first line of its description."""
    return {n: (f.__doc__ or "").strip().splitlines()[0] for n, f in sorted(_RECIPES.items())}


def load_recipe_plugins() -> None:
    """Import the recipes declared under the `vpr_registry.recipes` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    try:
        load_entry_point_group(RECIPE_GROUP, "VPR recipe plugin")
    except ImportError:
        _plugins_loaded = False
        raise


def get_recipe(name: str, model: Optional[nn.Module] = None) -> object:
    """A recipe by name; 'auto' picks the one registered for the model's aggregator, else 'global'."""
    load_recipe_plugins()
    if name == "auto":
        aggregator = (getattr(model, "config", {}) or {}).get("aggregator") if model is not None else None
        name = _DEFAULT_FOR.get(aggregator, "global")
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; registered: {sorted(_RECIPES)} (a plugin's recipe appears "
                         "once the plugin is imported)")
    return _RECIPES[name]()
