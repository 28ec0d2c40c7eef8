"""timm entry points: `timm.create_model('netvlad_vgg16')` builds through the registry.

Importing this module makes every model in the registry a timm model (`registry.list_models()`, plugins
included); a plugin that registers a model later adds it with `register_timm_model(name)` (ClusVPR's plugin
does, for `clusvpr_vgg16`). Each registered name gets one timm pretrained cfg per released tag
(`netvlad_vgg16.nordland`), the default tag first.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

from timm.models import generate_default_cfgs, register_model

from ._registry import get_entry, list_models
from .factory import create, model_info, release_model_args

# timm looks a registered entry point's pretrained cfgs up in its module's `default_cfgs`
default_cfgs: Dict[str, Any] = {}
# timm's generic keyword arguments: accepted only at the value a descriptor model honours, otherwise refused
_TIMM_ONLY_KWARGS = {
    "features_only": (False,),
    "num_classes": (0,),
    "in_chans": (3,),
    "drop_rate": (0, 0.0),
    "drop_path_rate": (0, 0.0),
    "pretrained_cfg_overlay": ({},),
    "pretrained_model_args": None,  # the config.json's model_args, checked by _check_config_args
}
_FIX = {
    "features_only": "a VPR model gives one global descriptor per image; for the backbone's feature map call "
                     "model.local_features(images)",
    "num_classes": "there is no classifier head; the output is the L2-normalised descriptor (model.num_features "
                   "wide; choose its size with descriptor_dim=...)",
    "in_chans": "the backbones take RGB images (3 channels)",
    "drop_rate": "the models' dropout is fixed by their architecture (ClusVPR: the CWT blocks' dropout)",
    "drop_path_rate": "the backbones have no stochastic depth",
    "pretrained_cfg_overlay": "pass pretrained='org/name@revision' or a local folder to load other weights",
}


def _refuse_timm_kwargs(name: str, kwargs: Dict[str, Any]) -> None:
    """Pop timm's generic keyword arguments, raising a ValueError for any value the model cannot honour."""
    for key, accepted in _TIMM_ONLY_KWARGS.items():
        value = kwargs.pop(key, None)
        if value is None or accepted is None or value in accepted:
            continue
        raise ValueError(f"timm.create_model({name!r}, {key}={value!r}) is not supported: {_FIX[key]}")


def _timm_cfg(name: str, tag: Optional[str] = None) -> Dict[str, Any]:
    """timm pretrained_cfg of a model, or of one of its releases (input size and published repo of the tag)."""
    entry = get_entry(name)
    info = model_info(name)
    cfg = {k: v for k, v in entry.pretrained_cfg.items() if k != "hf_hub_revision"}
    cfg.update(input_size=info["input_size"], mean=info["mean"], std=info["std"], num_classes=0,
               first_conv="backbone.features.0" if entry.backbone == "vgg16" else "backbone.conv1",
               classifier="", hf_hub_id=cfg.get("hf_hub_id") or "", architecture=name)
    if tag is not None:
        release = entry.release(tag)
        args = release_model_args(release)
        if "input_size" in args:
            cfg["input_size"] = (3, *args["input_size"])
        cfg.update(hf_hub_id=(release.hub or "").split("@")[0], tag=tag,
                   description=release.trained_on or cfg.get("description", ""))
    return cfg


def _cfg_dict(pretrained_cfg: Any) -> Dict[str, Any]:
    if isinstance(pretrained_cfg, dict):
        return pretrained_cfg
    return dict(getattr(pretrained_cfg, "__dict__", {}) or {})


def timm_source(pretrained: Union[bool, str], pretrained_cfg: Optional[Any], name: str) -> Union[bool, str]:
    """What `create(pretrained=...)` gets from timm's arguments: True (the release named by the tag, else
    the default release) unless the cfg names another Hub repository (then that repo, pinned when it is ours)."""
    if not pretrained:
        return False
    hub_id = _cfg_dict(pretrained_cfg).get("hf_hub_id")
    entry = get_entry(name)
    ours = {r.hub.split("@")[0]: r.hub for r in entry.releases.values() if r.hub}
    if hub_id and hub_id not in ours:
        rev = _cfg_dict(pretrained_cfg).get("hf_hub_revision")
        return f"{hub_id}@{rev}" if rev and "@" not in hub_id else hub_id
    return True


def _tag(pretrained_cfg: Any) -> Optional[str]:
    """The release tag timm passes: the string of `name.tag`, or the `tag` of a cfg."""
    if isinstance(pretrained_cfg, str):
        return pretrained_cfg
    return _cfg_dict(pretrained_cfg).get("tag") or None


def _check_config_args(name: str, config_args: Optional[Dict[str, Any]]) -> None:
    """timm passes an `hf-hub:` / `local-dir:` config.json's model_args on as keyword arguments (and, apart, as
    `pretrained_model_args`): as with registry.hub, they may only shape the architecture."""
    from registry.hub import WrongModelError
    from registry.models.factory import architecture_args

    refused = sorted(set(config_args or {}) - set(architecture_args(name)))
    if refused:
        raise WrongModelError(f"the config.json timm read for {name} sets model_args {refused}, which are not "
                              f"architecture arguments (valid: {', '.join(architecture_args(name))}); a repository's "
                              "config may not name weights or files to load")
    from ._build import check_ranges

    check_ranges(get_entry(name), dict(config_args or {}), f"config.json (read by timm) of {name}, model_args",
                 "The file was changed or damaged (config.json carries no checksum): restore it, or re-save the "
                 "model with save_pretrained")


def _make_entry(name: str):
    def entry(pretrained: bool = False, pretrained_cfg: Optional[Any] = None, **kwargs: Any):
        _check_config_args(name, kwargs.get("pretrained_model_args"))
        _refuse_timm_kwargs(name, kwargs)
        if kwargs.get("cache_dir") is None:
            kwargs.pop("cache_dir", None)
        tag = _tag(pretrained_cfg)
        full = f"{name}.{tag}" if tag else name
        model = create(full, pretrained=timm_source(pretrained, pretrained_cfg, name), **kwargs)
        released = (model.config.get("release") or {}).get("name", "").partition(".")[2]
        own = tag or (released if released in get_entry(name).releases else None)
        cfg = dict(_timm_cfg(name, own))
        cfg.update(model.config.get("pretrained_cfg", {}))
        cfg.update(input_size=tuple(model.input_config["input_size"]), mean=tuple(model.input_config["mean"]),
                   std=tuple(model.input_config["std"]))
        model.pretrained_cfg = model.default_cfg = cfg
        return model

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"{name} through the VPR registry (L2-normalised global descriptors)."
    return entry


def _default_cfgs(name: str) -> Dict[str, Dict[str, Any]]:
    """One cfg per released tag (the default tag first, so timm makes it the default), else the bare name."""
    entry = get_entry(name)
    tags = sorted(entry.releases, key=lambda t: (t != entry.default_release, t))
    return {f"{name}.{tag}": _timm_cfg(name, tag) for tag in tags} or {name: _timm_cfg(name)}


def register_timm_model(name: str) -> None:
    """Make the registry model `name` a timm model: `timm.create_model(name)`, `name.tag`, `hf-hub:` repositories
    holding it, `pretrained=True`. Registering a name twice is a no-op."""
    if name in globals():
        return
    default_cfgs.update(generate_default_cfgs(_default_cfgs(name)))
    globals()[name] = register_model(_make_entry(name))


for _name in list_models():
    register_timm_model(_name)
