"""Training any registry model: cluster initialisation, tuple mining, losses, the generic trainer, DDP, caching.

Entry point for users: `vpr train --help` (registry.cli.train). From Python::

    trainer = Trainer(model, train_set, "runs/x", TrainConfig(epochs=5), val_set=val_set)
    trainer.init_clusters()          # NetVLAD / ClusVPR: k-means -> runs/x/centroids.h5
    summary = trainer.fit()          # runs/x is then a Hub-layout folder: registry.create(name, pretrained="runs/x")
"""
from .._util.distributed import DistContext, init_distributed, sharded_apply, shutdown
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .clusters import (
    ClustersNotInitialisedError,
    clusters_initialised,
    init_clusters,
    kmeans,
    load_clusters,
    require_clusters,
    sample_local_descriptors,
)
from .config import TrainConfig
from .feature_cache import cached_source, frozen_cut
from .losses import hard_loss, sare_ind, sare_joint, soft_cross_entropy, triplet
from .mining import RerankConfig, TrainTuple, TupleMiner
from .recipes import GlobalRecipe, get_recipe, list_recipes, register_recipe
from .sources import CachedSource, ImageSource
from .trainer import Trainer

__all__ = [
    "CachedSource",
    "CheckpointError",
    "ClustersNotInitialisedError",
    "DistContext",
    "GlobalRecipe",
    "ImageSource",
    "RerankConfig",
    "TrainConfig",
    "TrainTuple",
    "Trainer",
    "TupleMiner",
    "cached_source",
    "clusters_initialised",
    "frozen_cut",
    "get_recipe",
    "hard_loss",
    "init_clusters",
    "init_distributed",
    "kmeans",
    "list_recipes",
    "load_checkpoint",
    "load_clusters",
    "register_recipe",
    "require_clusters",
    "sample_local_descriptors",
    "sare_ind",
    "sare_joint",
    "save_checkpoint",
    "sharded_apply",
    "shutdown",
    "soft_cross_entropy",
    "triplet",
]
