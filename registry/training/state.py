"""A training run's state and its files: what one checkpoint holds, the commit of an epoch, resume, stale files.

`train/checkpoint.pt` is the one atomic commit of an epoch: the training state (model, optimiser, scheduler, teacher,
mining memory), the run's progress (`TrainState`: generation, epoch, best so far, best weights, history) and the
options. `best.pt` and `log.jsonl` are views of it, rewritten (atomically) after each commit and again on resume, so a
kill between any two writes loses nothing and never mixes two epochs. The temporary files and staging folders a
kill leaves (`registry._util.atomic` names and recognises them) are removed when a run starts or resumes.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from .._util.atomic import atomic_path, leftovers
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import RESUME_CRITICAL, TrainConfig

PathLike = Union[str, os.PathLike]
CENTROIDS = "centroids.h5"
CHECKPOINT, BEST, LOG, SUMMARY = "checkpoint.pt", "best.pt", "log.jsonl", "summary.json"


@dataclass
class TrainState:
    """Where a run is and what it has measured: the part of a checkpoint that is not a module's state."""

    generation: int = 0
    epoch: int = 0
    best: Dict[str, Any] = field(default_factory=lambda: {"score": -math.inf})
    best_model: Optional[Dict[str, torch.Tensor]] = None  # CPU copy of the best weights so far
    history: List[Dict[str, Any]] = field(default_factory=list)

    def best_weights(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """The best model's weights (`model`'s current ones before any epoch was measured)."""
        return self.best_model if self.best_model is not None else model.state_dict()

    def record(self, record: Dict[str, Any], score: float, recalls: Dict[str, float], model: nn.Module) -> bool:
        """Append `record` (its "best" set here) to the history; when `score` beats the best so far, `model`'s weights
        (copied to the CPU) and this generation/epoch become the best. Returns whether it did."""
        improved = score > self.best["score"]
        if improved:
            self.best = {"score": score, "generation": self.generation, "epoch": self.epoch, "recalls": recalls}
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        record["best"] = improved
        self.history.append(record)
        return improved

    def to_checkpoint(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                      prev_negatives: np.ndarray, teacher: Optional[Dict[str, torch.Tensor]],
                      config: TrainConfig) -> Dict[str, Any]:
        """Everything checkpoint.pt holds: this state with the modules' states and the options."""
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generation": self.generation, "epoch": self.epoch, "best": self.best, "best_model": self.best_model,
            "history": self.history, "prev_negatives": torch.from_numpy(prev_negatives), "teacher": teacher,
            "config": config.to_dict(),
        }

    @classmethod
    def from_checkpoint(cls, state: Dict[str, Any]) -> "TrainState":
        return cls(int(state["generation"]), int(state["epoch"]), state["best"], state.get("best_model"),
                   list(state["history"]))

    def restore(self, checkpoint: Dict[str, Any]) -> None:
        """Take a checkpoint's progress, in place (the epoch loop holds this object)."""
        saved = TrainState.from_checkpoint(checkpoint)
        self.generation, self.epoch, self.best = saved.generation, saved.epoch, saved.best
        self.best_model, self.history = saved.best_model, saved.history


def check_options(saved: Dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to resume a checkpoint written with other values of the options a resumed run must keep
    (`RESUME_CRITICAL`); an option the checkpoint does not record counts as having its default value."""
    saved = {**TrainConfig().to_dict(), **saved}
    now = cfg.to_dict()
    changed = [k for k in RESUME_CRITICAL if saved.get(k) != now.get(k)]
    if changed:
        raise CheckpointError(
            "the checkpoint was written with other options: " + ", ".join(
                f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in changed)
            + "; resume with the original options, or start a new run in another --output folder")


class RunFolder:
    """Every file of a run in `output`: the Hub layout (`write_layout`) and its k-means centres (`centroids`), and
    in train/ checkpoint.pt and its views best.pt and log.jsonl, and summary.json; also the temporary files a killed
    run left. Only rank 0 writes (the caller decides)."""

    def __init__(self, output: PathLike) -> None:
        self.output = Path(output)
        self.train_dir = self.output / "train"
        self.centroids = self.output / CENTROIDS

    def copy_centroids(self, source: PathLike) -> None:
        """The run's centroids.h5, copied (atomically) from a given file."""
        with atomic_path(self.centroids) as tmp:
            shutil.copyfile(source, tmp)

    def write_layout(self, model: nn.Module, **facts: Any) -> Path:
        """The final model as the Hub layout in `output` (`model.save_pretrained(output, **facts)`)."""
        return model.save_pretrained(self.output, **facts)

    def read(self, cfg: TrainConfig) -> Dict[str, Any]:
        """The checkpoint to resume, checked against `cfg` (`check_options`); its `best_model` from best.pt when the
        checkpoint holds none."""
        state = load_checkpoint(self.train_dir / CHECKPOINT)
        check_options(state["config"], cfg)
        if state.get("best_model") is None and (self.train_dir / BEST).is_file():  # a checkpoint without its best model
            state["best_model"] = load_checkpoint(self.train_dir / BEST)["model"]
        return state

    def refuse_restart(self) -> None:
        """A new run must not overwrite a run that has a checkpoint."""
        if (self.train_dir / CHECKPOINT).exists():
            raise FileExistsError(f"{self.train_dir / CHECKPOINT} exists: pass --resume to continue that "
                                  "run, or choose another --output folder")

    def prepare(self) -> None:
        """A new run's train/ folder, without what a run killed before its first commit left (rank 0)."""
        self.train_dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale_files()
        for view in (BEST, LOG):
            (self.train_dir / view).unlink(missing_ok=True)

    def commit(self, checkpoint: Dict[str, Any], state: TrainState, best_changed: bool = True) -> None:
        """Write checkpoint.pt (the one atomic commit of an epoch), then its views best.pt and log.jsonl."""
        save_checkpoint(self.train_dir / CHECKPOINT, checkpoint)
        self.write_views(state, best_changed)

    def write_views(self, state: TrainState, best: bool = True) -> None:
        """best.pt (unless not `best`) and log.jsonl as `state` says, each written atomically."""
        if best and state.best_model is not None:
            save_checkpoint(self.train_dir / BEST, {"model": state.best_model, **state.best})
        with atomic_path(self.train_dir / LOG) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in state.history), encoding="utf-8")

    def write_summary(self, summary: Dict[str, Any]) -> None:
        with atomic_path(self.train_dir / SUMMARY) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def stale_files(self) -> List[Path]:
        """Temporary files in train/ and the output folder, and the output folder's own staging folders beside it
        (save_pretrained builds the layout there): not another folder's."""
        return (leftovers(self.train_dir) + leftovers(self.output)
                + leftovers(self.output.parent, target=self.output))

    def remove_stale_files(self) -> List[Path]:
        """Delete `stale_files()`; returns what was removed."""
        found = self.stale_files()
        for path in found:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return found
