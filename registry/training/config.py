"""TrainConfig: every option of a training run, checked up front so a bad value fails before any work."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..model import TRAIN_JITTER
from .losses import HARD_LOSSES

OPTIMIZERS = ("sgd", "adam")
SELECT_METRICS = ("R@1", "R@5", "R@10")
# SFRS/ClusVPR recipe (spec section 5)
RECIPE_TEMPERATURES = (0.06, 0.06, 0.05, 0.04)
RECIPE_JITTER = TRAIN_JITTER  # the model's own recipe jitter, one definition


@dataclass
class TrainConfig:
    """Options of one run; defaults are the ClusVPR recipe (spec section 5) except for the number of generations."""

    generations: int = 1
    epochs: int = 5
    gen0_epochs: Optional[int] = None  # epochs of generation 0 (default: `epochs`)
    queries_per_epoch: Optional[int] = None  # default: every trainable query
    optimizer: str = "sgd"
    lr: float = 1e-4
    aggregator_lr_mult: float = 1.0  # the aggregator's learning rate is lr x this (the backbone's is lr)
    momentum: float = 0.9
    weight_decay: float = 1e-3
    lr_step: int = 5
    lr_gamma: float = 0.5
    loss: str = "sare_ind"
    margin: float = 0.1 ** 0.5
    temperatures: Tuple[float, ...] = RECIPE_TEMPERATURES
    soft_weight: float = 0.5
    recipe: str = "auto"
    batch_size: int = 1  # tuples per optimisation step per process
    neg_num: int = 1
    neg_pool: int = 1000
    pos_num: int = 1
    pos_pool: int = 20
    cache_size: int = 1000
    pos_radius: Optional[float] = None  # default: the dataset's training radius (10 m; tolerance in places)
    neg_radius: Optional[float] = None  # default: the dataset's (25 m; 2.5 x tolerance in places)
    rerank_k1: int = 20
    rerank_k2: int = 1
    rerank_lambda: float = 0.1
    jitter: Optional[Tuple[float, float, float, float]] = RECIPE_JITTER
    select_by: str = "R@5"
    recall_ns: Tuple[int, ...] = (1, 5, 10)
    pca_images: int = 10_000
    # whitening sizes to choose from on validation after the fit (None in the list = no whitening); unset: the
    # model's own whitening_dim, unchecked (the recipe)
    whitening_dims: Optional[Tuple[Optional[int], ...]] = None
    cluster_descriptors: int = 50_000
    cluster_per_image: int = 100
    seed: int = 0  # tuple mining, dropout and jitter streams; also the two below when they are unset
    cluster_seed: Optional[int] = None  # k-means sample and k-means (default: seed)
    amp: Optional[bool] = None  # default: on for CUDA (bfloat16 autocast)
    eval_batch_size: int = 32
    num_workers: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)  # free-form facts recorded with the run

    def __post_init__(self) -> None:
        self.temperatures = tuple(float(t) for t in self.temperatures)
        self.recall_ns = tuple(int(n) for n in self.recall_ns)
        if self.jitter is not None:
            self.jitter = tuple(float(j) for j in self.jitter)
        if self.whitening_dims is not None:
            self.whitening_dims = tuple(None if d is None else int(d) for d in self.whitening_dims)
        self.validate()

    def epochs_of(self, generation: int) -> int:
        """Number of epochs in `generation`."""
        return self.gen0_epochs if generation == 0 and self.gen0_epochs is not None else self.epochs

    def seed_of_clusters(self) -> int:
        """Seed of the k-means sample and of k-means: `cluster_seed`, or `seed` when unset."""
        return self.seed if self.cluster_seed is None else self.cluster_seed

    def temperature(self, generation: int) -> float:
        """Teacher temperature of a generation (index 0: the student's and the hard loss's)."""
        return self.temperatures[min(generation, len(self.temperatures) - 1)]

    def validate(self) -> None:
        """Raise ValueError naming the first bad option and its valid range."""
        positive = ("generations", "epochs", "lr_step", "batch_size", "neg_num", "neg_pool", "pos_pool", "cache_size",
                    "pca_images", "cluster_descriptors", "cluster_per_image", "eval_batch_size", "rerank_k1",
                    "rerank_k2")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gen0_epochs", "queries_per_epoch"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")
        if self.pos_num < 0 or self.num_workers < 0:
            raise ValueError(f"pos_num and num_workers must be >= 0, got {self.pos_num}, {self.num_workers}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.loss not in HARD_LOSSES:
            raise ValueError(f"loss must be one of {sorted(HARD_LOSSES)}, got {self.loss!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1 or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1, 0 < lr_gamma <= 1; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, momentum={self.momentum}, lr_gamma={self.lr_gamma}")
        if self.aggregator_lr_mult <= 0:
            raise ValueError(f"aggregator_lr_mult must be > 0, got {self.aggregator_lr_mult}")
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(f"temperatures must be positive numbers, got {self.temperatures}")
        if self.soft_weight < 0 or self.margin <= 0:
            raise ValueError(f"soft_weight must be >= 0 and margin > 0, got {self.soft_weight}, {self.margin}")
        if self.select_by not in SELECT_METRICS:
            raise ValueError(f"select_by must be one of {SELECT_METRICS}, got {self.select_by!r}")
        if int(self.select_by[2:]) not in self.recall_ns:
            raise ValueError(f"select_by {self.select_by} needs N={self.select_by[2:]} in recall_ns {self.recall_ns}")
        if self.jitter is not None and (len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5):
            raise ValueError(f"jitter is (brightness, contrast, saturation, hue), each >= 0 and hue <= 0.5; "
                             f"got {self.jitter}")
        if self.whitening_dims is not None and (not self.whitening_dims or
                                                any(d is not None and d < 1 for d in self.whitening_dims)):
            raise ValueError(f"whitening_dims lists candidate sizes >= 1 or None (no whitening), got "
                             f"{self.whitening_dims}")
        if not 0 <= self.rerank_lambda <= 1:
            raise ValueError(f"rerank_lambda must be in [0, 1], got {self.rerank_lambda}")
        for name in ("pos_radius", "neg_radius"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.pos_radius is not None and self.neg_radius is not None and self.neg_radius < self.pos_radius:
            raise ValueError(f"neg_radius ({self.neg_radius}) must be >= pos_radius ({self.pos_radius})")

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (lists for tuples), for checkpoints and config.json."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**data)


# options that must match when a run is resumed (the rest, e.g. num_workers, may change)
RESUME_CRITICAL = ("generations", "epochs", "gen0_epochs", "queries_per_epoch", "optimizer", "lr", "aggregator_lr_mult",
                   "momentum", "weight_decay", "lr_step", "lr_gamma", "loss", "margin", "temperatures", "soft_weight",
                   "recipe", "batch_size", "neg_num", "neg_pool", "pos_num", "pos_pool", "cache_size", "pos_radius",
                   "neg_radius", "rerank_k1", "rerank_k2", "rerank_lambda", "jitter", "select_by", "seed",
                   "cluster_seed", "extra")
