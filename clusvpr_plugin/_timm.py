"""timm entry points: `timm.create_model('clusvpr_vgg16')` (and the baselines) build through the registry."""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import registry
from registry.factory import model_info

try:
    from timm.models import generate_default_cfgs, register_model
except ImportError:  # timm is a dependency, but keep `import clusvpr_plugin` usable without it
    generate_default_cfgs = register_model = None

TIMM_MODELS = ("clusvpr_vgg16", "netvlad_vgg16", "gem_vgg16", "gem_resnet50")
_TIMM_ONLY_KWARGS = ("pretrained_cfg_overlay", "pretrained_model_args", "features_only",
                     "num_classes", "in_chans", "drop_rate", "drop_path_rate")


def _timm_cfg(name: str) -> Dict[str, Any]:
    entry = registry._registry.get_entry(name)
    info = model_info(name)
    cfg = {k: v for k, v in entry.pretrained_cfg.items() if k != "hf_hub_revision"}
    cfg.update(input_size=info["input_size"], mean=info["mean"], std=info["std"], num_classes=0,
               first_conv="backbone.features.0" if entry.backbone == "vgg16" else "backbone.conv1",
               classifier="", hf_hub_id=cfg.get("hf_hub_id") or "", architecture=name)
    return cfg


def timm_source(pretrained: Union[bool, str], pretrained_cfg: Optional[Any], name: str) -> Union[bool, str]:
    """What `registry.create(pretrained=...)` gets from timm's arguments: the cfg's hf_hub_id at a pinned revision."""
    if not pretrained:
        return False
    cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, "__dict__", {}) or {}
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        default = registry._registry.get_entry(name).pretrained_cfg
        # the default repo's pinned revision applies to the default repo only
        rev = cfg.get("hf_hub_revision") or (default.get("hf_hub_revision") if hub_id == default.get("hf_hub_id") else None)
        return f"{hub_id}@{rev}" if rev and "@" not in hub_id else hub_id
    return True


def _check_config_args(name: str, config_args: Optional[Dict[str, Any]]) -> None:
    """timm passes an `hf-hub:` / `local-dir:` config.json's model_args on as keyword arguments (and, apart, as
    `pretrained_model_args`): as with registry.hub, they may only shape the architecture."""
    from registry.factory import architecture_args
    from registry.hub import WrongModelError

    refused = sorted(set(config_args or {}) - set(architecture_args(name)))
    if refused:
        raise WrongModelError(f"the config.json timm read for {name} sets model_args {refused}, which are not "
                              f"architecture arguments (valid: {', '.join(architecture_args(name))}); a repository's "
                              "config may not name weights or files to load")


def _make_entry(name: str):
    def entry(pretrained: bool = False, pretrained_cfg: Optional[Any] = None, **kwargs: Any):
        _check_config_args(name, kwargs.get("pretrained_model_args"))
        for k in _TIMM_ONLY_KWARGS:
            value = kwargs.pop(k, None)
            if k in ("num_classes", "in_chans") and value not in (None, 0, 3):
                raise ValueError(f"{name} is a descriptor model: {k}={value} is not supported")
        model = registry.create(name, pretrained=timm_source(pretrained, pretrained_cfg, name), **kwargs)
        cfg = dict(_timm_cfg(name))
        cfg.update(model.config.get("pretrained_cfg", {}))
        cfg.update(input_size=tuple(model.input_config["input_size"]), mean=tuple(model.input_config["mean"]),
                   std=tuple(model.input_config["std"]))
        model.pretrained_cfg = model.default_cfg = cfg
        return model

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"{name} through the VPR registry (L2-normalised global descriptors)."
    return entry


if register_model is not None:
    default_cfgs = generate_default_cfgs({name: _timm_cfg(name) for name in TIMM_MODELS})
    for _name in TIMM_MODELS:
        globals()[_name] = register_model(_make_entry(_name))
