"""The finishing steps of a run: the PCA whitening fitted on the best model's training descriptors, its size chosen
on validation, the final evaluation on test sets and under other inference runtimes (`FinalEvaluation`), and what
the Hub layout and summary.json record."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..quantize import DEFAULT_CALIBRATION_IMAGES
from ..whitening import fit_on_sample, select_whitening, set_whitening_dim
from .config import TrainConfig


def fit_pca(model: nn.Module, num_images: int, describe: Callable[[List[int]], np.ndarray], cfg: TrainConfig) -> bool:
    """Fit `model`'s whitening (if it has one) on `describe(indices)`, the un-whitened descriptors of the
    `cfg.pca_images` training images drawn from `cfg.seed` among `num_images`; whether it did."""
    if getattr(model, "whitening", None) is None:
        return False
    fit_on_sample(model.whitening, num_images, lambda pick: describe(pick.tolist()), cfg.pca_images, cfg.seed)
    return True


def choose_whitening(model: nn.Module, raw: torch.Tensor, recalls: Callable[[np.ndarray], Dict[str, float]],
                     dims: Sequence[Optional[int]], select_by: str) -> Tuple[Dict[str, Any], Dict[str, float]]:
    """Recall@N (`recalls` of whitened descriptors) of each candidate size in `dims` (leading components of the
    fitted whitening, or none) on un-whitened validation descriptors `raw`; `model` keeps the best by `select_by`
    (`select_whitening`). Returns the selection ({"chosen", "by", "candidates"}) and the chosen size's recalls."""

    @torch.no_grad()
    def measure(cut: Optional[nn.Module]) -> Dict[str, float]:
        return recalls((raw if cut is None else cut.to("cpu")(raw.float())).numpy())

    rows, best = select_whitening(model.whitening, dims, measure, lambda row: row[select_by])
    chosen = rows[best]["dim"]
    set_whitening_dim(model, chosen)
    return {"chosen": chosen, "by": select_by, "candidates": rows}, {k: r for k, r in rows[best].items() if k != "dim"}


def describe_choice(selection: Dict[str, Any]) -> str:
    """The choice and each candidate's score, for the log: "8 (8: 75.00, none: 66.67)"."""
    by, chosen = selection["by"], selection["chosen"]
    scores = ", ".join(f"{r['dim'] or 'none'}: {r[by]:.2f}" for r in selection["candidates"])
    return f"{chosen if chosen is not None else 'none'} ({scores})"


def summary_of(best: Dict[str, Any], final_val: Dict[str, float], seconds: float, history: List[Dict[str, Any]],
               selection: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """summary.json: the best epoch, the final model's validation recalls, the time, the history (and the whitening
    selection when there was one)."""
    summary = {"best": best, "final_val": final_val, "train_seconds": round(seconds, 1), "history": history}
    if selection is not None:
        summary["whitening_selection"] = selection
    return summary


def training_facts(train_name: str, val_name: Optional[str], recipe: str, best: Dict[str, Any], cfg: TrainConfig,
                   world_size: int, selection: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What config.json and the model card record about a training."""
    return {"datasets": [train_name], "validation": val_name, "recipe": recipe,
            "best": {k: v for k, v in best.items() if k != "score"}, "options": cfg.to_dict(),
            "world_size": world_size, **({"whitening_selection": selection} if selection else {})}


def recall_facts(val_name: Optional[str], final_val: Dict[str, float],
                 test: Optional[Dict[str, Dict[str, float]]] = None) -> Optional[Dict[str, Dict[str, float]]]:
    """config.json's measured recalls: the final validation's, when there was one, and each test set's."""
    recalls = {val_name: final_val} if val_name is not None and final_val else {}
    return {**recalls, **(test or {})} or None


@dataclass(frozen=True)
class FinalEvaluation:
    """What a run measures once the final model is chosen, beyond validation, and how summary.json names the run:
    Recall@N of eager PyTorch on `test_sets`; with `runtimes` other than torch, each of them on validation and the
    test sets (onnx-int8 calibrated on `calibration_images` evenly spaced training database images); the `command`
    that started the run and the wall time since `started` (`time.time()`; None: since `fit` began)."""

    test_sets: Sequence[Any] = ()
    runtimes: Sequence[str] = ("torch",)
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    command: str = ""
    started: Optional[float] = None

    def measure(self, model: nn.Module, train_set: Any, val_set: Any, batch_size: int, device: Any,
                progress: bool) -> Dict[str, Any]:
        """summary.json's "test" entry (and "runtimes" when a runtime other than torch is asked for)."""
        from ..evaluation.recall_table import recall_table
        from ..runtimes import evenly_spaced

        out: Dict[str, Any] = {"test": recall_table(model, list(self.test_sets), batch_size, device,
                                                    progress=progress)}
        others = [r for r in self.runtimes if r != "torch"]
        if others:  # the deployed ways of running it, on the same sets; torch's rows are final_val and test
            sets = ([val_set] if val_set is not None else []) + list(self.test_sets)
            calibration = evenly_spaced(train_set.db_images, self.calibration_images)
            out["runtimes"] = runtime_recalls(model, others, sets, calibration, batch_size, progress=progress)
        return out


def runtime_recalls(model: nn.Module, runtimes: Sequence[str], datasets: Sequence, calibration: Sequence,
                    batch_size: int = 32, progress: bool = True) -> Dict[str, Dict[str, Any]]:
    """The final model run by each of `runtimes` (registry.RUNTIMES other than 'torch') on `datasets`, as a user
    deploying it would: `{runtime: {"recalls": {dataset: recall row}, "facts": the runtime's facts (int8: its
    calibration), "images_per_s": encoding speed, decoding included}}`. A CPU copy of `model` is compiled (the runtimes
    run on the CPU; `model` itself is not touched); onnx-int8 is calibrated on `calibration` (image files: training
    images, never the evaluated ones)."""
    from ..evaluation.recall_table import recall_table
    from ..runtimes import compile_for

    cpu = copy.deepcopy(model).cpu().eval()
    images = sum(ds.num_queries + ds.num_db for ds in datasets)
    out: Dict[str, Dict[str, Any]] = {}
    for runtime in runtimes:
        rt = compile_for(cpu, runtime, calibration=list(calibration) if runtime == "onnx-int8" else None)
        start = time.perf_counter()
        recalls = recall_table(rt, datasets, batch_size, "cpu", progress=progress)
        seconds = time.perf_counter() - start
        out[runtime] = {"recalls": recalls, "facts": rt.facts(), "images_per_s": round(images / seconds, 2)}
    return out
