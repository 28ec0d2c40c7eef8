"""Choosing a whitening size on validation, among the leading components of one fit (or none)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn


def too_large(whitening: nn.Module, dims: Sequence[Optional[int]]) -> List[int]:
    """The candidate sizes in `dims` that `whitening` cannot give (more than its `out_dim` components)."""
    return [d for d in dims if d is not None and d > whitening.out_dim]


def select_whitening(
    whitening: nn.Module,
    dims: Sequence[Optional[int]],
    measure: Callable[[Optional[nn.Module]], Dict[str, Any]],
    score: Callable[[Dict[str, Any]], float],
) -> Tuple[List[Dict[str, Any]], int]:
    """Choose a whitening size on validation: one row {"dim": dim, **measure(cut)} per candidate, where `cut` is the
    fitted `whitening` truncated to its `dim` leading components (None for dim None: no whitening), and the index
    of the row with the highest `score(row)`; ties go to the candidate listed first. The trainer's
    `whitening_dims` and the whitening sweep (registry.training.sweep) both choose with it."""
    rows = [{"dim": dim, **measure(None if dim is None else whitening.truncated(dim))} for dim in dims]
    best = max(range(len(rows)), key=lambda i: (score(rows[i]), -i))
    return rows, best
