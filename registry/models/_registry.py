"""The model registry: named model builders, aliases, and plugin discovery through entry points."""
from __future__ import annotations

import difflib
import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .._util.jsonio import read_json
from ..hub.errors import WrongModelError

PLUGIN_GROUP = "vpr_registry.plugins"
_log = logging.getLogger(__name__)


PUBLISHED_FILE = "published.json"
_PIN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+@[0-9a-f]{40}")


@dataclass(frozen=True)
class Release:
    """Trained weights of a model under a tag (timm style: `clusvpr_vgg16.nordland`).

    `folder` is a copy in the Hub layout shipped inside the installed package; `hub` is a published repository
    pinned to a commit (`org/name@<40-hex>`). `pretrained=True` prefers the pin and falls back to the folder.
    """

    tag: str
    folder: Optional[Path] = None
    hub: Optional[str] = None
    trained_on: str = ""

    @property
    def location(self) -> Union[str, Path]:
        """What `registry.create(pretrained=...)` loads: the pinned repository, else the bundled folder."""
        if self.hub:
            return self.hub
        if self.folder is None:
            raise ValueError(f"release {self.tag!r} has neither a bundled folder nor a published repository")
        return self.folder


def find_releases(directory: Union[str, os.PathLike], model: str) -> Dict[str, Release]:
    """Releases of `model` bundled in `directory` (folders `<model>.<tag>/` in the Hub layout) and the pins
    recorded in `directory/published.json` (`{"<model>.<tag>": "org/name@<commit>"}`, written by
    `vpr release publish --record`)."""
    directory = Path(directory)
    pins: Dict[str, str] = {}
    if (directory / PUBLISHED_FILE).is_file():
        pins = read_json(directory / PUBLISHED_FILE, fix="restore it or write it again with `vpr release publish "
                         "--record`")
    found: Dict[str, Release] = {}
    for folder in sorted(directory.glob(f"{model}.*")):
        if not (folder / "config.json").is_file():
            continue
        tag = folder.name[len(model) + 1:]
        config = read_json(folder / "config.json", f"config.json of the release folder {folder}",
                           error=WrongModelError, fix="the release folder is damaged: restore it or delete it")
        found[tag] = Release(tag, folder, pins.get(folder.name), _trained_on(config))
    for key, pin in pins.items():
        name, _, tag = key.rpartition(".")
        if name != model:
            continue
        if not _PIN.fullmatch(pin):
            raise ValueError(f"{directory / PUBLISHED_FILE}: {key} = {pin!r} is not pinned; record "
                             "org/name@<40-hex commit> as printed by `vpr release publish`")
        if tag not in found:
            found[tag] = Release(tag, None, pin)
    return found


def _trained_on(config: Dict[str, Any]) -> str:
    """The release's own statement of its training data and domain (config.json 'release' facts)."""
    release = config.get("release") or {}
    return str(release.get("trained_on") or ", ".join((config.get("training") or {}).get("datasets") or []))


@dataclass
class ModelEntry:
    """One registered model: its builder and the facts `model_info` reports.

    `releases` maps tags to trained weights; `default_release` is the tag `pretrained=True` loads for the bare name;
    `citation` (BibTeX) goes into the model cards of its weights.
    """

    name: str
    builder: Callable[..., Any]
    backbone: str
    aggregator: str
    default_args: Dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)
    reference_loader: Optional[Callable[..., Any]] = None
    descriptor_dim: int = 0
    description: str = ""
    releases: Dict[str, Release] = field(default_factory=dict)
    default_release: Optional[str] = None
    citation: str = ""  # BibTeX of the method, for model cards

    def __post_init__(self) -> None:
        if self.default_release is None and self.releases:
            self.default_release = sorted(self.releases)[0]
        if self.default_release is not None and self.default_release not in self.releases:
            raise ValueError(f"{self.name}: default_release {self.default_release!r} is not one of its releases "
                             f"{sorted(self.releases)}")

    def release(self, tag: Optional[str] = None) -> Release:
        """The release under `tag` (default: `default_release`); errors name the valid tags or say none exists."""
        from ..errors import NotPublishedError

        if not self.releases:
            raise NotPublishedError(
                f"no trained weights of {self.name!r} are released, so pretrained=True has nothing to load. Get "
                f"weights by training (vpr train --model {self.name} ...), or pass "
                "pretrained='org/name[@revision]' or pretrained='path/to/dir' for a repository or folder you have."
            )
        tag = tag or self.default_release
        if tag not in self.releases:
            valid = ", ".join(f"{self.name}.{t}" for t in sorted(self.releases))
            raise KeyError(f"{self.name} has no release tagged {tag!r}; released: {valid}")
        return self.releases[tag]


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
    try:
        load_entry_point_group(PLUGIN_GROUP, "VPR plugin")
    except ImportError:
        _plugins_loaded = False  # the next lookup raises the same error instead of "unknown model"
        raise


def declared_entry_points(group: str) -> List[EntryPoint]:
    """The entry points of `group` declared by the installed distributions (`pip install .` or `-e .` registers
    this package's own)."""
    return list({ep.value: ep for ep in entry_points(group=group)}.values())


def load_entry_point_group(group: str, what: str) -> None:
    """Load every entry point of `group` (see `declared_entry_points`). An ImportError raised inside a plugin is
    re-raised naming the plugin (a broken install must not look like an unknown model); any other failure of a
    plugin is logged, not raised, so it does not break the models or recipes of everyone else."""
    for ep in declared_entry_points(group):
        try:
            ep.load()
        except ImportError as exc:
            raise ImportError(
                f"{what} {ep.name!r} ({ep.value}, entry point group {group!r}) could not be imported: {exc}. "
                "Install what it needs, reinstall the package that declares it, or uninstall that package"
            ) from exc
        except Exception as exc:
            _log.warning("%s %r (%s) failed to load: %s", what, ep.name, ep.value, exc)


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


def lookup(name: str) -> Tuple[ModelEntry, Optional[str]]:
    """The entry and release tag of a model name: `'clusvpr_vgg16.nordland'` -> (clusvpr_vgg16's entry,
    `'nordland'`), aliases resolved and the tag checked (KeyError naming the released tags); a name without a tag
    gives (entry, None). The name is resolved once."""
    load_plugins()
    base, dot, tag = name.rpartition(".")
    if not dot or _ALIASES.get(name, name) in _MODELS:
        return _MODELS[resolve_name(name)], None
    entry = _MODELS[resolve_name(base)]
    entry.release(tag)  # KeyError naming the released tags
    return entry, tag


def split_tag(name: str) -> Tuple[str, Optional[str]]:
    """`'clusvpr_vgg16.nordland'` -> `('clusvpr_vgg16', 'nordland')` (aliases resolved, the tag checked);
    a name without a tag gives `(name, None)`."""
    entry, tag = lookup(name)
    return entry.name, tag


def get_entry(name: str) -> ModelEntry:
    """The registry entry for a model name or alias (a `.tag` suffix is accepted and checked)."""
    return lookup(name)[0]


def citation(architecture: str, aggregator: str) -> str:
    """BibTeX for the model cards of `architecture`: its entry's, else that of a registered model with the same
    aggregator (a variant of the same method); "" when none is recorded."""
    load_plugins()
    entry = _MODELS.get(architecture)
    if entry is not None and getattr(entry, "citation", None):
        return entry.citation
    same = [e.citation for _, e in sorted(_MODELS.items())
            if e.aggregator == aggregator and getattr(e, "citation", None)]
    return same[0] if same else ""


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


def list_models(pattern: str = "*", pretrained: bool = False) -> List[str]:
    """Registered model names matching a shell-style pattern (aliases excluded); with `pretrained=True`, the
    released `name.tag` names instead (timm's convention)."""
    load_plugins()
    if pretrained:
        names = [f"{n}.{t}" for n, e in _MODELS.items() for t in e.releases]
        return sorted(n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split(".")[0], pattern))
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_aliases() -> Dict[str, str]:
    """Alias -> canonical model name."""
    load_plugins()
    return dict(_ALIASES)
