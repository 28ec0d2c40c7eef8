"""Hard (metric) losses on L2-normalised descriptors: SARE (independent / joint) and the triplet loss.

Every loss takes anchors (B, D), positives (B, D) and negatives (B, N, D) and returns a scalar,
averaged over tuples (and over negatives where the loss is per negative).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F

TRIPLET_MARGIN = math.sqrt(0.1)


def _similarities(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor):
    if anchor.ndim != 2 or positive.shape != anchor.shape or negatives.ndim != 3 or \
            negatives.shape[0] != anchor.shape[0] or negatives.shape[2] != anchor.shape[1]:
        raise ValueError(
            f"expected anchor (B, D), positive (B, D), negatives (B, N, D); got {tuple(anchor.shape)}, "
            f"{tuple(positive.shape)}, {tuple(negatives.shape)}"
        )
    s_ap = (anchor * positive).sum(-1)  # (B,)
    s_an = torch.einsum("bd,bnd->bn", anchor, negatives)  # (B, N)
    return s_ap, s_an


def sare_ind(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             temperature: float = 0.07, margin: float = TRIPLET_MARGIN) -> torch.Tensor:
    """mean over negatives of -log(e^{s_ap/t} / (e^{s_ap/t} + e^{s_an/t})): one 2-way softmax per negative."""
    s_ap, s_an = _similarities(anchor, positive, negatives)
    return F.softplus((s_an - s_ap.unsqueeze(1)) / temperature).mean()


def sare_joint(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
               temperature: float = 0.07, margin: float = TRIPLET_MARGIN) -> torch.Tensor:
    """-log of the positive's share in one softmax over the positive and all negatives."""
    s_ap, s_an = _similarities(anchor, positive, negatives)
    logits = torch.cat([s_ap.unsqueeze(1), s_an], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def triplet(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
            temperature: float = 0.07, margin: float = TRIPLET_MARGIN) -> torch.Tensor:
    """mean over negatives of max(0, ||a - p|| - ||a - n|| + margin) (Euclidean distances)."""
    _similarities(anchor, positive, negatives)
    d_ap = (anchor - positive).norm(dim=-1)
    d_an = (anchor.unsqueeze(1) - negatives).norm(dim=-1)
    return F.relu(d_ap.unsqueeze(1) - d_an + margin).mean()


HARD_LOSSES: Dict[str, Callable[..., torch.Tensor]] = {"sare_ind": sare_ind, "sare_joint": sare_joint,
                                                       "triplet": triplet}


def hard_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function called `name`."""
    if name not in HARD_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(HARD_LOSSES)}")
    return HARD_LOSSES[name]


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """sum_j -softmax(teacher)_j log softmax(student)_j per row, averaged over rows (teacher gets no gradient)."""
    _check_logits(student_logits, teacher_logits)
    target = F.softmax(teacher_logits.detach(), dim=-1)
    return -(target * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per row, averaged over rows, for q = softmax(teacher) (no gradient) and p = softmax(student):
    soft_cross_entropy minus the teacher's entropy, which does not depend on the student, so both have the same
    gradient; 0 where the student's distribution is the teacher's."""
    _check_logits(student_logits, teacher_logits)
    log_q = F.log_softmax(teacher_logits.detach(), dim=-1)
    return (log_q.exp() * (log_q - F.log_softmax(student_logits, dim=-1))).sum(-1).mean()
