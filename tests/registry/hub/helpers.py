"""Helpers shared by the Hub tests: the network guard's error, the huggingface_hub environment, small models."""
from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn

TOKEN = "hf_test_write_token"
TINY = "hubtest_tiny_netvlad"


class NonLoopbackConnectionError(AssertionError):
    """A test tried to reach a host other than 127.0.0.1 / ::1."""


def is_loopback(host) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def hub_environment(home: Path, endpoint: str) -> Iterator[pytest.MonkeyPatch]:
    """Point huggingface_hub at `endpoint` with its cache and token file under `home`, whatever it read at import."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    cache = home / "hub"
    home.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                     "HUGGINGFACE_CO_STAGING", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
            mp.delenv(name, raising=False)
        for name, value in {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache),
                            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                            "HF_HUB_DISABLE_UPDATE_CHECK": "1"}.items():
            mp.setenv(name, value)
        for name, value in {
            "ENDPOINT": endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HUGGINGFACE_HUB_CACHE": str(cache),
            "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": False, "HF_HUB_ETAG_TIMEOUT": constants.DEFAULT_ETAG_TIMEOUT,
        }.items():
            mp.setattr(constants, name, value)
        bars_were_off = are_progress_bars_disabled()
        disable_progress_bars()
        huggingface_hub.close_session()  # no pooled connection to an earlier test's server
        try:
            yield mp
        finally:
            huggingface_hub.close_session()
            if not bars_were_off:
                enable_progress_bars()


class TinyBackbone(nn.Module):
    """Two convolutions, 16 channels at stride 16: a backbone small enough for fast Hub round trips."""

    mid_channels = 8
    out_channels = 16
    stride = 16

    def __init__(self, weights=None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, self.mid_channels, 4, stride=4), nn.ReLU(),
                                      nn.Conv2d(self.mid_channels, self.out_channels, 4, stride=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def initialise(model, seed: int = 0):
    """Give a model seed-dependent aggregator weights, cluster centres and a fitted whitening (as training would)."""
    torch.manual_seed(seed)
    agg = model.aggregator
    with torch.no_grad():  # the backbone is already randomly initialised; the aggregator gets a seed of its own
        for p in agg.parameters():
            p.add_(0.01 * torch.randn_like(p))
    if hasattr(agg, "init_from_clusters"):
        k, d = agg.centroids.shape
        agg.init_from_clusters(torch.randn(k, d), torch.randn(64, d))
    if model.whitening is not None:
        n = model.whitening.out_dim + 8
        model.fit_whitening(torch.nn.functional.normalize(torch.randn(n, model.whitening.in_dim), dim=-1))
    return model.eval()


def outputs(model, images: torch.Tensor) -> torch.Tensor:
    """Descriptors in eval mode without gradients."""
    with torch.no_grad():
        return model.eval()(images)


def register_tiny_netvlad(monkeypatch, name: str, backbone_name: str, backbone: type, description: str) -> str:
    """Registers `name` for one test: `backbone` + NetVLAD with 4 clusters + an 8-d whitening, at 32x32."""
    from registry.models import _registry
    from registry.models.factory import build_vpr_model, pretrained_cfg

    _registry.load_plugins()
    monkeypatch.setitem(_registry._BACKBONES, backbone_name, backbone)
    monkeypatch.setitem(_registry._MODELS, name, _registry.ModelEntry(
        name, build_vpr_model, backbone_name, "netvlad",
        default_args={"num_clusters": 4, "whitening_dim": 8, "input_size": (32, 32)}, descriptor_dim=8,
        pretrained_cfg=pretrained_cfg(), description=description))
    return name
