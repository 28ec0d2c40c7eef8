"""Backbones: timm VGG16 cut at conv5_3 before its ReLU, and timm ResNet-50 cut after layer3."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from ._build import check_finite
from ._registry import register_backbone

# timm's and torchvision's VGG16 `features` indices: conv5_3 is 28, its ReLU 29, the last pool 30.
_VGG16_CONV5_3 = 28
_VGG16_CONV5_1 = 24
_HEAD_PREFIXES = ("classifier.", "fc.", "pre_logits.", "head.")


def load_weights_file(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a state dict from safetensors (preferred) or a torch file with `weights_only=True` (no code unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path} (pass an existing .safetensors or .pth file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def load_strict(module: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module`, failing with the names of missing and unexpected keys (head keys ignored)."""
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(
            f"weights in {source} do not match {type(module).__name__}: "
            f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}; "
            "pass a file with torchvision/timm parameter names for this backbone"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ValueError(f"weights in {source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    check_finite(state, f"the backbone weights file {source}")
    module.load_state_dict(state, strict=True)


def _timm_model(name: str, imagenet: bool) -> nn.Module:
    """The timm model; without ImageNet weights it is built on the meta device (its head is never allocated)."""
    import timm

    if imagenet:
        return timm.create_model(name, pretrained=True)
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


def _materialise(module: nn.Module, nonlinearity: str) -> None:
    """Allocate meta parameters on the CPU with He (fan_out) init for convs, unit/zero for norms, as timm does."""
    module.to_empty(device="cpu")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()


class VGG16Backbone(nn.Module):
    """VGG16 conv1_1..conv5_3 without the last ReLU and pool: 512 channels at stride 16."""

    out_channels = 512
    stride = 16

    def __init__(self, weights: Optional[str] = None, train_layers: str = "conv5") -> None:
        super().__init__()
        vgg = _timm_model("vgg16", weights == "imagenet")
        self.features = nn.Sequential(*list(vgg.features.children())[: _VGG16_CONV5_3 + 1])
        if weights != "imagenet":
            _materialise(self, "relu")
        if weights not in (None, "imagenet"):
            load_strict(self, load_weights_file(weights), str(weights))
        self.set_trainable(train_layers)

    def set_trainable(self, train_layers: str) -> None:
        """'conv5': train conv5_1 onwards (reference recipe); 'all': everything; 'none': nothing."""
        first = {"conv5": _VGG16_CONV5_1, "all": 0, "none": len(self.features)}
        if train_layers not in first:
            raise ValueError(f"train_layers must be one of {sorted(first)}, got {train_layers!r}")
        for i, layer in enumerate(self.features):
            for p in layer.parameters():
                p.requires_grad_(i >= first[train_layers])
        self.train_layers = train_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResNet50Backbone(nn.Module):
    """ResNet-50 stem + layer1..layer3: 1024 channels at stride 16."""

    out_channels = 1024
    stride = 16

    def __init__(self, weights: Optional[str] = None, train_layers: str = "layer3") -> None:
        super().__init__()
        net = _timm_model("resnet50", weights == "imagenet")
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        if weights != "imagenet":
            _materialise(self, "relu")
        if weights not in (None, "imagenet"):
            state = {k: v for k, v in load_weights_file(weights).items() if not k.startswith("layer4.")}
            load_strict(self, state, str(weights))
        self.set_trainable(train_layers)

    def set_trainable(self, train_layers: str) -> None:
        """'layer3': train layer3 only; 'all': everything; 'none': nothing. Frozen BatchNorms stay in eval mode."""
        names = ["conv1", "bn1", "layer1", "layer2", "layer3"]
        first = {"layer3": 4, "all": 0, "none": len(names)}
        if train_layers not in first:
            raise ValueError(f"train_layers must be one of {sorted(first)}, got {train_layers!r}")
        self._frozen = names[: first[train_layers]]
        for i, n in enumerate(names):
            for p in getattr(self, n).parameters():
                p.requires_grad_(i >= first[train_layers])
        self.train_layers = train_layers
        self.train(self.training)

    def train(self, mode: bool = True) -> "ResNet50Backbone":
        super().train(mode)
        for n in getattr(self, "_frozen", []):
            getattr(self, n).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


# the ResNet-50 backbone's modules in forward order (what backbone_stages lists)
_RESNET_STAGES = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3")


def backbone_stages(backbone: nn.Module) -> List[nn.Module]:
    """The backbone as an ordered list of layers (VGG `features`, or ResNet stem + layers)."""
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential):
        return list(features)
    if all(hasattr(backbone, n) for n in _RESNET_STAGES):
        return [getattr(backbone, n) for n in _RESNET_STAGES]
    raise TypeError(
        f"cannot split a {type(backbone).__name__} into layers for feature caching (VGG `features` or the ResNet "
        "stem + layer1..3 are supported): train without --cache-features"
    )


register_backbone("vgg16", VGG16Backbone)
register_backbone("resnet50", ResNet50Backbone)
