"""Checkpoints written atomically (a crash or a full disk never destroys the last good one), read with weights_only."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Union

import torch

from .._util.atomic import atomic_path, write_failure

PathLike = Union[str, os.PathLike]
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read."""


# what torch's C++ writer says when a write stops short (a full disk, a quota, the file-size limit); it raises
# RuntimeError, not OSError, so the cause cannot be told apart
_SHORT_WRITE = ("unexpected pos", "file write failed", "iostream error")


def _short_write(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _SHORT_WRITE)


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> None:
    """torch.save `state` (tensors and plain Python values only) to `path` through a temporary file."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, **state}, tmp)
    except (OSError, RuntimeError) as err:
        if not isinstance(err, OSError) and not _short_write(err):
            raise
        raw = err.__cause__ if getattr(err, "atomic_target", None) is not None else err  # atomic_path's rewording
        kept = (f"the last good {path.name} is kept unchanged" if path.is_file()
                else f"no earlier {path.name} exists")
        if _short_write(err):
            why = ("torch's writer stopped short: a quota or the file-size limit (ulimit -f) was reached, or the disk "
                   "is full")
        else:
            why = write_failure(err) or "the write failed"
        raise CheckpointError(
            f"could not write checkpoint {path}: {why} ({type(raw).__name__}: {raw}); {kept}. Free space on that "
            "disk (or fix the folder, or raise the limit), then continue the run with the same command plus --resume"
        ) from err


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (weights_only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unpickling failure means the file is unusable)
        raise CheckpointError(f"checkpoint {path} cannot be read ({err}): it is corrupt or from another tool; "
                              "delete it to start over, or restore a copy") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of this version (format {FORMAT})")
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds NaN or Inf values in {len(bad)} tensor(s): {', '.join(bad[:6])}"
            f"{', ...' if len(bad) > 6 else ''}: it is damaged (a run whose loss turns non-finite stops before "
            "committing); restore a copy, or delete the run folder and start over without --resume"
        )
    return state


def _non_finite(obj: Any, where: str = "") -> List[str]:
    """Where in a loaded checkpoint (`model/aggregator.centroids`, `optimizer/state/3/exp_avg`) floating-point
    tensors hold NaN or Inf."""
    if isinstance(obj, torch.Tensor):
        return [where] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return [bad for key, value in items for bad in _non_finite(value, f"{where}/{key}" if where else str(key))]

