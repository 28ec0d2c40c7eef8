"""Checkpoints written atomically (a crash or a full disk never destroys the last good one), read with weights_only."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

from .._atomic import atomic_path

PathLike = Union[str, os.PathLike]
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read."""


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> None:
    """torch.save `state` (tensors and plain Python values only) to `path` through a temporary file."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, **state}, tmp)
    except OSError as err:
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no earlier {path.name} exists"
        why = "the disk is full" if err.errno == errno.ENOSPC else f"the write failed ({err})"
        raise CheckpointError(
            f"could not write checkpoint {path}: {why}; {kept}. Free space (or fix the folder) and continue the "
            "run with --resume"
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
    return state

