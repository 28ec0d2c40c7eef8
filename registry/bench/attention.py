"""Heat maps of where a model looks: each named attention map, upsampled and blended over the query image."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from registry._util.atomic import atomic_path
from registry.datasets import VPRDataset
from registry.datasets.images import open_rgb
from registry.evaluation import Preprocess

from .config import log

ALPHA = 0.5
COLORMAP = "jet"


def upsampled(maps: Dict[str, torch.Tensor], size: tuple) -> Dict[str, np.ndarray]:
    """Each (1, h, w) map bilinearly resized to `size` (H, W) and scaled to 0..1 (a constant map becomes 0)."""
    out = {}
    for name, m in maps.items():
        up = F.interpolate(m.float()[:, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        lo, hi = up.min(), up.max()
        out[name] = ((up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)).cpu().numpy()
    return out


def _figure(image: np.ndarray, maps: Dict[str, np.ndarray], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols * w / max(h, w) + 0.4, 3.6 * h / max(h, w) + 0.6),
                             squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("input", fontsize=8)
    for ax, (name, heat) in zip(axes[0, 1:], maps.items()):
        ax.imshow(image)
        ax.imshow(heat, cmap=COLORMAP, alpha=ALPHA, vmin=0.0, vmax=1.0)
        ax.set_title(name.replace("_", " "), fontsize=8)
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig, plt


def save_attention(model: torch.nn.Module, ds: VPRDataset, queries: Sequence[int], folder: Path,
                   title: str) -> List[Path]:
    """One PNG per query `<folder>/<dataset>_qNNNNN.png`; nothing (and a note) if the model has no maps."""
    pre = Preprocess(model.input_config)
    device = next(model.parameters()).device
    files = []
    for qi in queries:
        img = open_rgb(ds.q_images[qi])
        x = pre(img).unsqueeze(0).to(device)
        try:
            maps = model.attention_maps(x)
        except NotImplementedError as err:
            log(f"   no heat maps for {title}: {err}")
            return files
        shown = np.asarray(img.resize((x.shape[3], x.shape[2])))
        fig, plt = _figure(shown, upsampled(maps, tuple(x.shape[2:])), f"{title} - {ds.name} query {qi}")
        path = folder / f"{ds.name}_q{qi:05d}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        files.append(path)
    return files
