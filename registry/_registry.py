"""The model registry: named model builders, aliases, and plugin discovery through entry points."""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, List, Optional

PLUGIN_GROUP = "vpr_registry.plugins"
_log = logging.getLogger(__name__)


@dataclass
class ModelEntry:
    """One registered model: its builder and the facts `model_info` reports."""

    name: str
    builder: Callable[..., Any]
    backbone: str
    aggregator: str
    default_args: Dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)
    reference_loader: Optional[Callable[..., Any]] = None
    descriptor_dim: int = 0
    description: str = ""


_MODELS: Dict[str, ModelEntry] = {}
_ALIASES: Dict[str, str] = {}
_BACKBONES: Dict[str, Callable[..., Any]] = {}
_AGGREGATORS: Dict[str, Callable[..., Any]] = {}
_plugins_loaded = False


def _check_new(table: Dict[str, Any], name: str, kind: str, overwrite: bool) -> None:
    if name in table and not overwrite:
        raise ValueError(f"{kind} {name!r} is already registered; pass overwrite=True to replace it")


def register_model(entry: ModelEntry, aliases: tuple = (), overwrite: bool = False) -> ModelEntry:
    """Register a model builder (plugins call this); duplicate names are an error, not a silent overwrite."""
    _check_new(_MODELS, entry.name, "model", overwrite)
    _MODELS[entry.name] = entry
    for alias in aliases:
        _check_new(_ALIASES, alias, "alias", overwrite)
        _ALIASES[alias] = entry.name
    return entry


def register_backbone(name: str, factory: Callable[..., Any], overwrite: bool = False) -> None:
    """Register a backbone factory `factory(**kwargs) -> nn.Module` exposing `out_channels`."""
    _check_new(_BACKBONES, name, "backbone", overwrite)
    _BACKBONES[name] = factory


def register_aggregator(name: str, factory: Callable[..., Any], overwrite: bool = False) -> None:
    """Register an aggregator factory `factory(in_channels, **kwargs) -> nn.Module` exposing `out_dim`."""
    _check_new(_AGGREGATORS, name, "aggregator", overwrite)
    _AGGREGATORS[name] = factory


def load_plugins() -> None:
    """Import every plugin declared under the `vpr_registry.plugins` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    load_entry_point_group(PLUGIN_GROUP, "clusvpr_plugin", "VPR plugin")


def load_entry_point_group(group: str, bundled: str, what: str) -> None:
    """Load every entry point of `group`, then import the `bundled` module (so a source checkout, which has no
    installed entry points, registers it too). A broken third-party entry point is logged, not raised: it must
    not break the models or recipes of everyone else."""
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as exc:
            _log.warning("%s %r (%s) failed to load: %s", what, ep.name, ep.value, exc)
    try:
        importlib.import_module(bundled)
    except ImportError:
        pass


def _suggest(name: str, candidates: List[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.4)
    shown = close or sorted(candidates)[:10]
    return ", ".join(shown)


def resolve_name(name: str) -> str:
    """Canonical model name for a name or alias; KeyError listing the closest valid names otherwise."""
    load_plugins()
    name = _ALIASES.get(name, name)
    if name not in _MODELS:
        valid = sorted(_MODELS) + sorted(_ALIASES)
        raise KeyError(f"unknown model {name!r}; closest valid names: {_suggest(name, valid)}")
    return name


def get_entry(name: str) -> ModelEntry:
    """The registry entry for a model name or alias."""
    return _MODELS[resolve_name(name)]


def get_backbone(name: str) -> Callable[..., Any]:
    """The backbone factory registered under `name`."""
    load_plugins()
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; closest valid names: {_suggest(name, list(_BACKBONES))}")
    return _BACKBONES[name]


def get_aggregator(name: str) -> Callable[..., Any]:
    """The aggregator factory registered under `name`."""
    load_plugins()
    if name not in _AGGREGATORS:
        raise KeyError(f"unknown aggregator {name!r}; closest valid names: {_suggest(name, list(_AGGREGATORS))}")
    return _AGGREGATORS[name]


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching a shell-style pattern (aliases excluded)."""
    load_plugins()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_aliases() -> Dict[str, str]:
    """Alias -> canonical model name."""
    load_plugins()
    return dict(_ALIASES)
