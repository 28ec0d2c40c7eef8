"""Generations: generation g > 0 starts from the best model so far, which is also its teacher when the recipe
uses one; each generation trains for `cfg.epochs_of(g)` epochs."""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .config import TrainConfig


class Generations:
    """The generation schedule and the frozen teacher of `step` (the module the optimiser runs: `step.model` is the
    model trained, `step.teacher` what the recipe distils from)."""

    def __init__(self, step: nn.Module, recipe: Any, cfg: TrainConfig) -> None:
        self.step, self.recipe, self.cfg = step, recipe, cfg

    @property
    def teacher(self) -> Optional[nn.Module]:
        return self.step.teacher

    def _set_teacher(self, teacher: Optional[nn.Module]) -> None:
        object.__setattr__(self.step, "teacher", teacher)  # frozen, not a submodule: DDP must not sync it

    def start(self, generation: int, best_weights: Dict[str, torch.Tensor]) -> None:
        """From generation 1 on, load `best_weights` into the model; the teacher is a frozen copy of the model when
        the recipe uses one in `generation`, else none. (The optimiser starts afresh: the caller's part.)"""
        model = self.step.model
        if generation > 0:
            model.load_state_dict(best_weights)
        teacher = None
        if self.recipe.uses_teacher(generation):
            teacher = copy.deepcopy(model).eval()
            teacher.requires_grad_(False)
        self._set_teacher(teacher)

    def teacher_state(self) -> Optional[Dict[str, torch.Tensor]]:
        """The teacher's weights, for the checkpoint (None without a teacher)."""
        return self.teacher.state_dict() if self.teacher is not None else None

    def restore_teacher(self, weights: Optional[Dict[str, torch.Tensor]]) -> None:
        """A resumed run's teacher: a frozen copy of the (already restored) model with the checkpoint's teacher
        weights; none when the checkpoint has none."""
        if weights is None:
            return
        teacher = copy.deepcopy(self.step.model)
        teacher.load_state_dict(weights)
        teacher.eval().requires_grad_(False)
        self._set_teacher(teacher)

    def next(self, generation: int, epoch: int) -> Tuple[int, int, bool]:
        """After `epoch` epochs of `generation`: (generation, epoch) to train next, and whether that is the start of
        a new generation (False while the current one has epochs left, or when none is left to start)."""
        if epoch < self.cfg.epochs_of(generation):
            return generation, epoch, False
        return generation + 1, 0, generation + 1 < self.cfg.generations

    def done(self, generation: int) -> bool:
        """Whether every generation has been trained."""
        return generation >= self.cfg.generations
