"""Sequence matching of ordered frames against an ordered map, in the manner of SeqSLAM (Milford and Wyeth, "SeqSLAM:
Visual route-based navigation for sunny summer days and stormy winter nights", ICRA 2012).

For each query frame, the distances to every map image (squared L2 of the L2-normalised descriptors, 2 - 2 cos)
form a column. Each column is contrast-normalised along the map: every entry minus the mean, divided by the
standard deviation, of the entries within `window` map images around it. A match of the newest frame with map
image i at relative speed v scores the sum, over the last L frames t = 0..L-1 back, of the normalised distance of
frame (now - t) to map image i - round(v * t); a term that falls outside the map counts as 0, the normalised
mean, so a sequence that leaves the map is neither rewarded nor punished. The score of i is the lowest over the
speeds; lower is better. With L = 1 only the contrast normalisation sets it apart from single-frame ranking.

`SequenceMatcher` is the streaming form (one frame at a time, the last L columns kept); `sequence_rankings` ranks a
whole route of queries with it, so both share one computation.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional, Sequence, Tuple

import numpy as np

DEFAULT_VELOCITIES = (0.8, 0.9, 1.0, 1.1, 1.2)  # SeqSLAM: 0.8 to 1.2 in steps of 0.1
DEFAULT_WINDOW = 200  # map images; chosen on validation places among 5..200 (SeqSLAM used 10 on its data)
MAX_LENGTH = 1000
_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class SequenceSpec:
    """Sequence length L (frames), the relative speeds tried (map images per frame; negative = the route driven
    the other way), and the contrast window (map images)."""

    length: int = 10
    velocities: Tuple[float, ...] = DEFAULT_VELOCITIES
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or not 1 <= self.length <= MAX_LENGTH:
            raise ValueError(f"sequence length must be an integer in 1..{MAX_LENGTH}, got {self.length!r}")
        velocities = tuple(float(v) for v in self.velocities)
        if not velocities or not all(math.isfinite(v) and abs(v) <= 100 for v in velocities):
            raise ValueError(f"velocities must be finite numbers in -100..100, got {self.velocities!r}")
        object.__setattr__(self, "velocities", velocities)
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"the contrast window must be an integer >= 1 map images, got {self.window!r}")


def distance_column(query: np.ndarray, database: np.ndarray) -> np.ndarray:
    """(..., N) squared L2 distances 2 - 2 q.d of L2-normalised query descriptors to every database row."""
    return (2.0 - 2.0 * np.asarray(query, np.float32) @ np.asarray(database, np.float32).T).astype(np.float32)


def contrast_normalise(column: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Each entry minus the mean over the `window` entries around it (clipped at the ends), divided by their
    standard deviation (floored at 1e-6)."""
    d = np.asarray(column, np.float64)
    n = len(d)
    half = window // 2
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + (window - half), 0, n)
    c1 = np.concatenate([[0.0], np.cumsum(d)])
    c2 = np.concatenate([[0.0], np.cumsum(d * d)])
    count = hi - lo
    mean = (c1[hi] - c1[lo]) / count
    var = np.maximum((c2[hi] - c2[lo]) / count - mean * mean, 0.0)
    return ((d - mean) / np.maximum(np.sqrt(var), _STD_FLOOR)).astype(np.float32)


def sequence_scores(columns: Sequence[np.ndarray], velocities: Sequence[float] = DEFAULT_VELOCITIES) -> np.ndarray:
    """(N,) score per map image for the newest frame: `columns` are the normalised columns, oldest first."""
    cols = list(columns)
    n = len(cols[-1])
    best = np.full(n, np.inf, np.float32)
    total = np.empty(n, np.float32)
    for v in velocities:
        total[:] = 0.0
        for t in range(len(cols)):
            k = int(round(v * t))
            col = cols[-1 - t]
            if 0 <= k < n:
                total[k:] += col[: n - k]
            elif -n < k < 0:
                total[: n + k] += col[-k:]
        np.minimum(best, total, out=best)
    return best


class SequenceMatcher:
    """Streaming sequence matching against one ordered map: `push(distances)` takes a frame's raw distance column
    (`distance_column`) and returns the scores of the map images for it, over the last L frames pushed."""

    def __init__(self, spec: Optional[SequenceSpec] = None) -> None:
        self.spec = spec or SequenceSpec()
        self._columns: Deque[np.ndarray] = deque(maxlen=self.spec.length)

    def __len__(self) -> int:
        return len(self._columns)

    def reset(self) -> None:
        self._columns.clear()

    def push(self, distances: np.ndarray) -> np.ndarray:
        distances = np.asarray(distances)
        if distances.ndim != 1 or not len(distances):
            raise ValueError(f"a frame's distances are one non-empty row per map image, got shape {distances.shape}")
        if self._columns and len(self._columns[-1]) != len(distances):
            raise ValueError(f"this frame has distances to {len(distances)} map images, the earlier frames to "
                             f"{len(self._columns[-1])}: the map changed; reset() the matcher")
        if not np.isfinite(distances).all():
            raise ValueError("a frame's distances hold NaN or Inf: check the descriptors")
        self._columns.append(contrast_normalise(distances, self.spec.window))
        return sequence_scores(self._columns, self.spec.velocities)


def sequence_rankings(queries: np.ndarray, database: np.ndarray, k: int,
                      spec: Optional[SequenceSpec] = None) -> np.ndarray:
    """(Nq, k) map indices per query of a route (queries in route order), best sequence score first; the first
    L - 1 queries use the frames there are."""
    matcher = SequenceMatcher(spec)
    k = min(k, len(database))
    out = np.empty((len(queries), k), np.int64)
    for j, column in enumerate(distance_column(queries, database)):
        scores = matcher.push(column)
        top = np.argpartition(scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        out[j] = top[np.argsort(scores[top], kind="stable")]
    return out
