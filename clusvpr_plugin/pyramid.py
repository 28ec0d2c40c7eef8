"""ClusVPR's training recipe: the 21-region pyramid and self-supervised region similarities.

Regions of one image, cut from the CWT-refined feature map as a 3 x 4 grid of cells (row-major 0..11):
global (all 12), 2 large halves, 6 medium 2 x 2 blocks, 12 small cells. Each is intra- and L2-normalised,
so the global region equals the whole-image descriptor. Generation 0 trains the global descriptor with the
hard loss; generation g >= 1 trains against a frozen teacher (the previous generation): hardest-region
negatives for the hard loss, plus a soft cross-entropy between the student's and the teacher's softmax
over the anchor's similarity to every region of its difficult positives. With place batches (`--batching places`)
the trainer runs the same generations and teacher, and the soft loss compares the teacher's and the student's
similarity distributions of each image over the rest of its P x K batch (registry.training.place_batch).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from registry.training.config import TrainConfig
from registry.training.losses import hard_loss, soft_cross_entropy
from registry.training.recipes import GlobalRecipe, register_recipe
from registry.training.sources import Source

from .optlad import OptLAD

GRID = (3, 4)
LARGE = ((0, 1, 4, 5, 8, 9), (2, 3, 6, 7, 10, 11))
MEDIUM = ((0, 1, 4, 5), (1, 2, 5, 6), (2, 3, 6, 7), (4, 5, 8, 9), (5, 6, 9, 10), (6, 7, 10, 11))
SMALL = tuple((i,) for i in range(GRID[0] * GRID[1]))
REGIONS = (tuple(range(GRID[0] * GRID[1])),) + LARGE + MEDIUM + SMALL
NUM_REGIONS = len(REGIONS)  # 21


def _membership(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(21, 12) 0/1 matrix: which cells each region sums."""
    m = torch.zeros(NUM_REGIONS, GRID[0] * GRID[1], device=device, dtype=dtype)
    for r, cells in enumerate(REGIONS):
        m[r, list(cells)] = 1
    return m


def region_descriptors(aggregator: nn.Module, feature_map: torch.Tensor) -> torch.Tensor:
    """(N, 21, K*D) normalised region descriptors of a ClusVPR aggregator's input map (global region first)."""
    cells = aggregator.optlad.patch_vlads(aggregator.refine(feature_map), *GRID)  # (N, 12, K, D)
    regions = torch.einsum("rc,nckd->nrkd", _membership(cells.device, cells.dtype), cells)
    return OptLAD.normalise(regions.float())


def hardest_regions(anchor: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """For each negative, its region most similar to the anchor: (B, D), (B, N, R, D) -> (B, N, D)."""
    sims = torch.einsum("bd,bnrd->bnr", anchor, regions)
    pick = sims.argmax(-1)  # (B, N)
    return torch.gather(regions, 2, pick[..., None, None].expand(-1, -1, 1, regions.shape[-1])).squeeze(2)


def region_logits(anchor: torch.Tensor, regions: torch.Tensor, temperature: float) -> torch.Tensor:
    """Anchor-to-region similarities over all regions of all difficult positives: (B, D), (B, P, R, D) -> (B, P*R)."""
    return torch.einsum("bd,bprd->bpr", anchor, regions).flatten(1) / temperature


class PyramidRecipe:
    """ClusVPR: generation 0 on global descriptors; later generations with a teacher and region similarities."""

    name = "pyramid"
    supports_generations = True

    def uses_difficult(self, generation: int) -> bool:
        """Difficult positives feed the soft loss, from generation 1 on."""
        return generation > 0

    def uses_teacher(self, generation: int) -> bool:
        """Generations >= 1 learn from the frozen previous generation."""
        return generation > 0

    def loss(self, model: nn.Module, teacher: Optional[nn.Module], source: Source, inputs: torch.Tensor,
             cfg: TrainConfig, generation: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        """hard (generation 0) or hard + soft_weight * soft (later generations) for a (B, T, ...) batch."""
        if generation == 0:
            return GlobalRecipe().loss(model, None, source, inputs, cfg, 0)
        if teacher is None:
            raise ValueError(f"generation {generation} of the pyramid recipe needs the previous generation as teacher")
        b, t = inputs.shape[:2]
        n, p = cfg.neg_num, (t - 2 - cfg.neg_num)
        fn = hard_loss(cfg.loss)
        regions = region_descriptors(model.aggregator, source.features(model, inputs.flatten(0, 1)))
        regions = regions.view(b, t, NUM_REGIONS, -1)
        anchor, positive = regions[:, 0, 0], regions[:, 1, 0]
        negatives = hardest_regions(anchor, regions[:, 2 : 2 + n])
        hard = fn(anchor, positive, negatives, temperature=cfg.temperature(0), margin=cfg.margin)
        with torch.no_grad():
            keep = torch.tensor([0] + list(range(2 + n, t)), device=inputs.device)
            t_in = inputs[:, keep].flatten(0, 1)
            t_regions = region_descriptors(teacher.aggregator, source.features(teacher, t_in))
            t_regions = t_regions.view(b, 1 + p, NUM_REGIONS, -1)
            target = region_logits(t_regions[:, 0, 0], t_regions[:, 1:], cfg.temperature(generation))
        soft = soft_cross_entropy(region_logits(anchor, regions[:, 2 + n :], cfg.temperature(0)), target)
        loss = hard + cfg.soft_weight * soft
        return loss, {"hard": float(hard.detach()), "soft": float(soft.detach())}


register_recipe("pyramid", PyramidRecipe, aggregators=("clusvpr",))
