"""Sequence matching of ordered frames against a map (registry.evaluation.sequence: SeqSLAM-style scores over the
last L frames, a range of relative speeds, contrast-normalised distance columns), reported as Matches."""
from __future__ import annotations

from typing import Any, List

import numpy as np

from ..evaluation.sequence import SequenceMatcher, SequenceSpec
from .manifest import MapError


class MapSequenceMatcher:
    """Streaming sequence matcher over one map version: `push(descriptor)` -> the k best Matches by the sequence
    score (their `distance`; lower is better) over the last `length` frames pushed; `reset()` starts a new route."""

    def __init__(self, m: Any, length: int, k: int) -> None:
        try:
            spec = SequenceSpec(length=length)
        except ValueError as err:
            raise MapError(f"sequence length: {err}") from None
        self.map, self.k, self.length = m, k, spec.length
        self._matcher = SequenceMatcher(spec)

    def __len__(self) -> int:
        return len(self._matcher)

    def reset(self) -> None:
        self._matcher.reset()

    def push(self, descriptor: np.ndarray) -> List[Any]:
        scores = self._matcher.push(self.map.distance_column(descriptor))
        k = min(self.k, len(scores))
        top = np.argpartition(scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(scores[top], kind="stable")]
        return [self.map.match(rank, int(row), float(scores[row])) for rank, row in enumerate(top, 1)]
