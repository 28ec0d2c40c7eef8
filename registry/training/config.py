"""TrainConfig: every option of a training run, checked up front so a bad value fails before any work.

Each field that is also a command-line option of the trainer (`vpr train`) declares its default
and its --help text here, once (registry._util.options.option); registry/cli/train.py generates the parser from it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .._util.options import field_default, option
from ..models.model import TRAIN_JITTER
from .losses import HARD_LOSSES, TRIPLET_MARGIN
from .mining import RerankConfig

OPTIMIZERS = ("sgd", "adam")
BATCHINGS = ("tuples", "places")
PLACE_LOSSES = ("multi_similarity",)
SELECT_METRICS = ("R@1", "R@5", "R@10")
# SFRS/ClusVPR recipe: the hard loss's and student's temperature, then the teacher's per generation
RECIPE_TEMPERATURES = (0.06, 0.06, 0.05, 0.04)
RECIPE_JITTER = TRAIN_JITTER  # the model's own recipe jitter, one definition
RECIPE_GENERATIONS = 4  # generations of a recipe with a teacher (ClusVPR's pyramid); the command line's default
# --help sections of the trainer's options
MODEL, DATA, SCHEDULE, CLUSTERS, RUN = "model", "data", "schedule and optimisation", "clusters", "run"


def whitening_dim_arg(text: str) -> Optional[int]:
    """argparse type of a whitening size: an integer >= 1, or 'none' (no whitening)."""
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whitening size must be >= 1, got {value}")
    return value


@dataclass
class TrainConfig:
    """Options of one run; defaults are the ClusVPR recipe except for the number of generations.

    Fields declared with `option` are the trainer's command-line options (default and --help text); the others
    (generations, whose command-line default depends on the recipe; the re-ranking triple, one --rerank option;
    recall_ns; extra) are set by registry/cli/train.py or from Python.
    """

    generations: int = 1
    epochs: int = option(5, "epochs per generation (default {default})", group=SCHEDULE)
    gen0_epochs: Optional[int] = option(None, "epochs of generation 0 (default --epochs)", group=SCHEDULE)
    patience: Optional[int] = option(None, "early stopping: end a generation after this many epochs in a row without a "
                                     "better validation score (--epochs / --gen0-epochs are then the most a "
                                     "generation trains; default: every epoch)", group=SCHEDULE)
    queries_per_epoch: Optional[int] = option(None, "training tuples per epoch (default: every trainable query)",
                                              group=SCHEDULE)
    optimizer: str = option("sgd", "optimiser (default {default})", group=SCHEDULE, choices=OPTIMIZERS)
    lr: float = option(1e-4, "learning rate (default {default})", group=SCHEDULE)
    aggregator_lr_mult: float = option(1.0, "the aggregator learns at lr x this, the backbone at lr (default "
                                       "{default})", group=SCHEDULE)
    momentum: float = option(0.9, "SGD momentum (default {default})", group=SCHEDULE)
    weight_decay: float = option(1e-3, "weight decay (default {default})", group=SCHEDULE)
    lr_step: int = option(5, "StepLR period in epochs (default {default})", group=SCHEDULE)
    lr_gamma: float = option(0.5, "StepLR factor (default {default}; 1 = constant)", group=SCHEDULE)
    loss: str = option("sare_ind", "loss: a hard loss of tuples, or multi_similarity with --batching places (default "
                       "{default})", group=SCHEDULE, choices=tuple(HARD_LOSSES) + PLACE_LOSSES)
    batching: str = option("tuples", "tuples: a query, a positive and mined hard negatives; places: P places x K "
                           "images each, every pair in the batch (default {default})",
                           group=SCHEDULE, choices=BATCHINGS)
    places_per_batch: int = option(32, "places per batch with --batching places (default {default})", group=SCHEDULE)
    images_per_place: int = option(4, "images of each place per batch with --batching places (default {default})",
                                   group=SCHEDULE)
    short_places: str = option("replace", "places with fewer than --images-per-place images: drawn with replacement "
                               "or skipped (default {default}; places of one image are always skipped)",
                               group=SCHEDULE, choices=("replace", "skip"))
    margin: float = option(TRIPLET_MARGIN, "triplet margin (default sqrt(0.1) = {default})", group=SCHEDULE)
    temperatures: Tuple[float, ...] = option(RECIPE_TEMPERATURES, "first: hard loss and student; then the teacher's "
                                             "per generation (default {default})", group=SCHEDULE, type=float,
                                             nargs="+")
    soft_weight: float = option(0.5, "weight of the soft loss (default {default})", group=SCHEDULE)
    recipe: str = option("auto", "global | pyramid (ClusVPR) | auto: the model's own (default {default})",
                         group=SCHEDULE)
    batch_size: int = option(1, "tuples per optimisation step per process (default {default})", group=SCHEDULE)
    neg_num: int = option(1, "hard negatives per tuple (default {default})", group=SCHEDULE)
    neg_pool: int = option(1000, "random negatives ranked per query (default {default})", group=SCHEDULE)
    pos_num: int = option(1, "difficult positives per tuple, pyramid (default {default})", group=SCHEDULE)
    pos_pool: int = option(20, "nearest positives they are drawn from (default {default})", group=SCHEDULE)
    cache_size: int = option(1000, "queries per descriptor refresh (default {default})", group=SCHEDULE)
    pos_radius: Optional[float] = option(None, "training positives within this distance (dataset unit; default: the "
                                         "dataset's, 10 m, or the tolerance in places)", group=DATA)
    neg_radius: Optional[float] = option(None, "training negatives beyond this distance (dataset unit; default: the "
                                         "dataset's, 25 m, or 2.5 x the tolerance in places)", group=DATA)
    # k-reciprocal re-ranking for difficult positives (the miner's defaults): the command line's --rerank K1 K2 LAMBDA
    rerank_k1: int = field_default(RerankConfig, "k1")
    rerank_k2: int = field_default(RerankConfig, "k2")
    rerank_lambda: float = field_default(RerankConfig, "lambda_value")
    jitter: Optional[Tuple[float, float, float, float]] = option(RECIPE_JITTER, "colour jitter of training images "
                                                                 "(default {default})", group=SCHEDULE, type=float,
                                                                 nargs=4, metavar=("B", "C", "S", "H"))
    select_by: str = option("R@5", "best-model metric (default {default})", group=SCHEDULE, choices=SELECT_METRICS)
    recall_ns: Tuple[int, ...] = (1, 5, 10)
    pca_images: int = option(10_000, "training images for PCA-whitening (default {default})", group=SCHEDULE)
    # unset: the model's own whitening_dim, unchecked (the recipe)
    whitening_dims: Optional[Tuple[Optional[int], ...]] = option(
        None, "choose the whitening size on validation among these (integers up to the model's whitening_dim, or "
        "'none'); default: keep the model's whitening_dim", group=SCHEDULE, type=whitening_dim_arg, nargs="+",
        metavar="DIM")
    cluster_descriptors: int = option(50_000, "descriptors for k-means (default {default})", group=CLUSTERS)
    cluster_per_image: int = option(100, "descriptors per image (default {default})", group=CLUSTERS)
    seed: int = option(0, "random seed of tuple mining, dropout and jitter, and of --init-seed and --cluster-seed "
                       "unless given (default {default})", group=RUN)
    cluster_seed: Optional[int] = option(None, "seed of the k-means sample and k-means (default: --seed)", group=RUN)
    amp: Optional[bool] = option(None, "bfloat16 autocast (default: on for CUDA)", group=RUN,
                                 action=argparse.BooleanOptionalAction)
    eval_batch_size: int = option(32, "batch for descriptors (default {default})", group=RUN)
    num_workers: int = option(0, "image-loading workers (default {default})", group=RUN)
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
        for name in ("gen0_epochs", "queries_per_epoch", "patience"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")
        if self.pos_num < 0 or self.num_workers < 0:
            raise ValueError(f"pos_num and num_workers must be >= 0, got {self.pos_num}, {self.num_workers}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        self._validate_batching()
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

    def _validate_batching(self) -> None:
        if self.batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {BATCHINGS}, got {self.batching!r}")
        losses = PLACE_LOSSES if self.batching == "places" else tuple(sorted(HARD_LOSSES))
        if self.loss not in losses:
            raise ValueError(f"--batching {self.batching} trains with loss {' or '.join(losses)}, got {self.loss!r}")
        if self.places_per_batch < 2 or self.images_per_place < 2:
            raise ValueError(f"places_per_batch and images_per_place must be >= 2 (negatives and a positive pair), "
                             f"got {self.places_per_batch}, {self.images_per_place}")

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
RESUME_CRITICAL = ("generations", "epochs", "gen0_epochs", "patience", "queries_per_epoch", "optimizer", "lr",
                   "aggregator_lr_mult", "momentum", "weight_decay", "lr_step", "lr_gamma", "loss", "margin",
                   "temperatures", "soft_weight", "recipe", "batching", "places_per_batch", "images_per_place",
                   "short_places", "batch_size", "neg_num", "neg_pool", "pos_num", "pos_pool", "cache_size",
                   "pos_radius", "neg_radius", "rerank_k1", "rerank_k2", "rerank_lambda", "jitter", "select_by",
                   "seed", "cluster_seed", "extra")
