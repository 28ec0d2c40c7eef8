"""A tiny image encoder and image files for the descriptor-store tests (also run by their torchrun/kill scripts)."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


class TinyEncoder(nn.Module):
    """Conv + pooled 2x2 layout, 32-d unit descriptors; `input_hw` is part of its input config."""

    def __init__(self, input_hw=(16, 24), seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.input_config = {"input_size": (3, *input_hw), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.3, 0.4),
                             "resize": "fixed", "interpolation": "bilinear"}
        self.calls = 0
        self.die_after = None  # SIGKILL this process on that forward call (a power cut, not an exception)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return F.normalize(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), (2, 2)).flatten(1), dim=-1)


def write_images(folder: Path, n: int) -> List[str]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


if __name__ == "__main__":  # python tiny_encoder.py IMAGES_DIR STORE [DIE_AFTER]; under torchrun: sharded
    import sys

    from registry.evaluation import extract_to_store
    from registry.training import init_distributed, shutdown

    images = sorted(str(p) for p in Path(sys.argv[1]).glob("*.png"))
    model = TinyEncoder()
    if len(sys.argv) > 3:
        model.die_after = int(sys.argv[3])
    ctx = init_distributed("cpu")
    extract_to_store(model, images, sys.argv[2], chunk_size=4, batch_size=2, device="cpu", ctx=ctx, progress=False)
    shutdown(ctx)
