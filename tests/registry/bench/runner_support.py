"""Helpers of the runner tests: the runner (registry.bench), tiny test models, a tiny generated dataset."""
from __future__ import annotations

import contextlib
import csv
import importlib
import json
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[3]
BENCHMARKS = REPO / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_MODELS = ("runnertest_netvlad", "runnertest_gem", "runnertest_clusvpr")


def runner_module(name: str):
    """A module of the runner package, `registry.bench.<name>`."""
    return importlib.import_module(f"registry.bench.{name}")


def load_runner():
    """The runner's command line, `registry.cli.bench` (parse_args, main; `run` is registry.bench.run), as `vpr bench`
    and benchmarks/run.py use it."""
    return importlib.import_module("registry.cli.bench")


class TinyBackbone(nn.Module):
    """Two strided convs: 16 channels at stride 16, so a 64x64 image gives a 4x4 map in microseconds."""

    out_channels = 16
    stride = 16

    def __init__(self, weights=None, train_layers=None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.Conv2d(8, 16, 4, stride=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@contextlib.contextmanager
def tiny_models() -> Iterator[List[str]]:
    """Register the tiny backbone and three tiny models (NetVLAD + whitening, GeM, ClusVPR) for the block."""
    from registry.models import _registry
    from registry.models.factory import build_vpr_model, pretrained_cfg

    _registry.load_plugins()
    size = {"input_size": (64, 64)}
    entries = {
        "runnertest_netvlad": ("netvlad", {"num_clusters": 4, "whitening_dim": 8, **size}),
        "runnertest_gem": ("gem", size),
        "runnertest_clusvpr": ("clusvpr", {"num_clusters": 4, "knn_k": 3, **size}),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_registry._BACKBONES, "runnertest_tiny", TinyBackbone)
        for name, (agg, args) in entries.items():
            mp.setitem(_registry._MODELS, name, _registry.ModelEntry(
                name, build_vpr_model, "runnertest_tiny", agg, default_args=args, pretrained_cfg=pretrained_cfg(),
                description=f"runner test model: tiny backbone + {agg}"))
        yield list(entries)


def write_aligned_dataset(root: Path, places: int = 12, size=(64, 48)) -> Path:
    """queries/ and database/ with one PNG per place: a per-place pattern, the query a noisy copy."""
    rng = np.random.default_rng(0)
    for place in range(places):
        base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3)).repeat(8, 0).repeat(8, 1)
        for folder, noise in (("database", 0), ("queries", 20)):
            img = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8) if noise else base
            path = root / folder / f"place{place:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(path)
    return root


def is_png(path: Path) -> bool:
    """A readable PNG file."""
    if path.read_bytes()[:8] != PNG_SIGNATURE:
        return False
    with Image.open(path) as img:
        img.verify()
    return True


def read_outputs(out: Path) -> Dict[str, object]:
    """results.json, the results.csv rows and the results.md text of a run."""
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"json": json.loads((out / "results.json").read_text()), "csv": rows, "md": (out / "results.md").read_text()}


def markdown_rows(md: str) -> List[List[str]]:
    """Cells of the results table's body rows."""
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
