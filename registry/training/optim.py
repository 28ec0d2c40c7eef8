"""The optimiser of a run and its schedule: one `Optimisation` object, renewed at the start of each generation and
restored on resume, so the epoch loop and the checkpoint hold the same optimiser and StepLR schedule."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from .config import TrainConfig


class Optimisation:
    """`optimizer` (SGD or Adam over `model`'s trainable parameters, the aggregator at lr x `aggregator_lr_mult`)
    and `scheduler` (StepLR) as `cfg` says; both None until `renew`."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.model, self.cfg = model, cfg
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None

    def renew(self) -> None:
        """A fresh optimiser and schedule (the start of a generation, or before a resumed run loads its states)."""
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: check --train-layers")
        if cfg.aggregator_lr_mult != 1.0:  # two groups: the backbone at lr, the aggregator at lr x mult
            head = {id(p) for p in self.model.aggregator.parameters()}
            groups = [{"params": [p for p in params if id(p) not in head]},
                      {"params": [p for p in params if id(p) in head], "lr": cfg.lr * cfg.aggregator_lr_mult}]
            params = [g for g in groups if g["params"]]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.lr_step, cfg.lr_gamma)

    def restore(self, optimizer_state: Dict[str, Any], scheduler_state: Dict[str, Any]) -> None:
        """A resumed run's optimiser and schedule: fresh ones loaded with the checkpoint's states."""
        self.renew()
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(scheduler_state)

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group now."""
        return self.optimizer.param_groups[0]["lr"]
