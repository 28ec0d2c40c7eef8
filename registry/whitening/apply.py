"""Applying a fitted whitening to un-whitened descriptors as VPRModel's forward does: the layer, then L2
normalisation."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def whiten_tensor(whitening: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`whitening(x)`, L2-normalised (the caller chooses the grad and autocast context)."""
    return F.normalize(whitening(x), dim=-1)


@torch.inference_mode()
def whiten(whitening: nn.Module, descs: np.ndarray) -> np.ndarray:
    """Whitened, L2-normalised copies of un-whitened (N, in_dim) descriptors, computed on the whitening's device."""
    return whiten_tensor(whitening, torch.from_numpy(descs).to(whitening.mu.device)).cpu().numpy()
