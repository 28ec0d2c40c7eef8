"""Tiny generated data and tiny registry models for fast training tests (also a --plugin for train.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import registry
from registry import ModelEntry
from registry.models.factory import build_vpr_model, pretrained_cfg

IMAGE_HW = (32, 48)
TINY_MODELS = ("tiny_netvlad", "tiny_gem", "tiny_clusvpr")


def _place_pattern(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour pattern (H, W, 3) in 0..1: low-resolution noise upsampled."""
    coarse = rng.random((4, 6, 3))
    h, w = IMAGE_HW
    return np.kron(coarse, np.ones((h // 4, w // 6, 1)))


def write_traversal(root: Path, places: int = 12, seed: int = 0, noise: float = 0.05) -> Path:
    """`root/database` and `root/queries`, one image per place; queries see the place in another "season"
    (colours inverted and channels rotated), which random features do not match but training can learn."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("database", "queries"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(places):
        pattern = _place_pattern(rng)
        db = np.clip(pattern + noise * rng.standard_normal(pattern.shape), 0, 1)
        q = np.clip(1 - pattern[..., [2, 0, 1]] + noise * rng.standard_normal(pattern.shape), 0, 1)
        for sub, img in (("database", db), ("queries", q)):
            Image.fromarray((img * 255).astype(np.uint8)).save(root / sub / f"{i:04d}.png")
    return root


class TinyCNN(nn.Module):
    """Three 3x3 convs, stride 4, 32 channels; as in VGG16, 'conv5' freezes all but the last conv."""

    out_channels = 32
    stride = 4

    def __init__(self, weights=None, train_layers: str = "conv5") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
        )
        first = {"conv5": 6, "all": 0}[train_layers]
        for i, layer in enumerate(self.features):
            for p in layer.parameters():
                p.requires_grad_(i >= first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def small_config(**changes):
    """A fast TrainConfig for the tiny models (Adam, batches of 4 tuples, no jitter)."""
    from registry.training import TrainConfig

    base = dict(epochs=2, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=4, neg_pool=8, cache_size=8,
                jitter=None, cluster_descriptors=400, cluster_per_image=50, pca_images=32, temperatures=(0.1,))
    base.update(changes)
    return TrainConfig(**base)


def register() -> None:
    """Register the tiny backbone and models (idempotent)."""
    from registry.models import _registry

    if "tiny_netvlad" in _registry._MODELS:
        return
    registry.register_backbone("tiny_cnn", TinyCNN)
    common = {"input_size": IMAGE_HW, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    for name, agg, extra in (
        ("tiny_netvlad", "netvlad", {"num_clusters": 4, "whitening_dim": 8}),
        ("tiny_gem", "gem", {}),
        ("tiny_clusvpr", "clusvpr", {"num_clusters": 4, "whitening_dim": 8, "cwt_depth": 1, "knn_k": 4}),
    ):
        registry.register_model(ModelEntry(name, build_vpr_model, "tiny_cnn", agg, default_args={**common, **extra},
                                           pretrained_cfg=pretrained_cfg(), description=f"test model ({agg})"))


register()


class Killed(Exception):
    """Stands in for a SIGKILL right after a checkpoint was written."""


def kill_after(*epochs):
    """A trainer callback that raises Killed once the run has trained any of `epochs` epochs in all."""
    def callback(trainer, record):
        trained = sum("loss" in r for r in trainer.history)
        if trained in epochs:
            raise Killed(trained)
    return callback


def assert_same_weights(want_folder: Path, got_folder: Path) -> None:
    """The two run folders' model.safetensors hold the same tensors (float tolerance of a resumed run)."""
    from safetensors.torch import load_file

    want, got = load_file(str(want_folder / "model.safetensors")), load_file(str(got_folder / "model.safetensors"))
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
