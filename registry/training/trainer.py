"""The generic trainer: `Trainer` composes the pieces of a run and is their public entry.

Output folder (`state.RunFolder` owns every file of it): the Hub layout (config.json, model.safetensors,
centroids.h5, pca.h5, README.md) once training ends, and `train/` with `checkpoint.pt` (last epoch), `best.pt` (best
validation model), `log.jsonl` and `summary.json`. The pieces, one job each, each given what it uses: the epoch loop
(`loop.py`: `EpochLoop` over the run's state, validation, the best model, the commit; `TupleEpoch`, the tuple recipe's
mining and optimiser step), the optimiser and its schedule (`optim.py`), the run's state, its files and resume
(`state.py`), generations and the teacher (`generations.py`), and the finishing steps (`finish.py`: PCA whitening,
its size, the test sets and other runtimes, what the Hub layout records). This module holds the options, DDP and
descriptors, builds the pieces and runs them in order (`fit`).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._util.distributed import DistContext, sharded_apply
from ..datasets.base import VPRDataset
from ..datasets.places import DEFAULT_PLACE_RADIUS_M, places_from_dataset
from ..evaluation.recall_table import descriptor_recalls
from ..whitening import enough_to_fit, too_large, whiten_tensor
from . import finish
from .clusters import attach_cluster_source, init_clusters, require_clusters
from .config import TrainConfig
from .feature_cache import cached_source
from .generations import Generations
from .loop import EpochLoop, Step, TupleEpoch
from .mining import RerankConfig, TupleMiner
from .optim import Optimisation
from .place_batch import Distillation, PlaceBatchSampler, PlaceEpoch, multi_similarity_loss
from .recipes import get_recipe, global_descriptors
from .sources import ImageSource, Source, stack_items
from .state import RunFolder, TrainState

_log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Callback = Callable[["Trainer", Dict[str, Any]], None]


def _in_state(name: str) -> property:
    """A field of the Trainer's `TrainState`, read and written as an attribute of the Trainer."""
    return property(lambda self: getattr(self.state, name), lambda self, value: setattr(self.state, name, value))


class Trainer:
    """Trains any registry model on a VPRDataset with validation Recall@N and exact resume."""

    def __init__(
        self,
        model: nn.Module,
        train_set: VPRDataset,
        output: PathLike,
        config: Optional[TrainConfig] = None,
        val_set: Optional[VPRDataset] = None,
        ctx: Optional[DistContext] = None,
        cache_features: bool = False,
        cache_dir: Optional[PathLike] = None,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg = config or TrainConfig()
        self.ctx = ctx or DistContext()
        self.model = model.to(self.ctx.device)
        self.ctx.broadcast_module(self.model)
        self.train_set, self.val_set = train_set, val_set
        self.output = Path(output)
        self.folder = RunFolder(self.output)
        self.train_dir = self.folder.train_dir
        self.progress = progress and self.ctx.is_main
        self.callbacks = list(callbacks)
        self.recipe = get_recipe(self.cfg.recipe, model)
        if self.cfg.generations > 1 and not self.recipe.supports_generations:
            raise ValueError(f"recipe {self.recipe.name!r} has no teacher, so generations > 1 would repeat generation "
                             "0: use --generations 1, or a recipe with generations (ClusVPR's 'pyramid')")
        # place batches mine no tuples: no miner (its positives and non-negatives of every query) is built
        self.miner, self.trainable = self._miner(train_set) if self.cfg.batching == "tuples" else \
            (None, np.empty(0, dtype=np.int64))
        self._check_whitening()
        cache_dir = cache_dir if cache_dir is not None else (self.output / "feature_cache" if cache_features else None)
        self.source = self._source(train_set, cache_features, cache_dir, "training features")
        self.val_source = self._source(val_set, cache_features, cache_dir, "validation features") \
            if val_set is not None else None
        self.amp = self.ctx.device.type == "cuda" if self.cfg.amp is None else bool(self.cfg.amp)
        self.step = Step(self.model, self.recipe, self.source, self.cfg)
        self.engine: nn.Module = self._wrap(self.step)
        self.optim = Optimisation(self.model, self.cfg)
        self.state = TrainState()
        self.generations = Generations(self.step, self.recipe, self.cfg)
        epoch = self._epoch(train_set)
        self.loop = EpochLoop(model=self.model, state=self.state, generations=self.generations, optim=self.optim,
                              epoch=epoch, validate=self.validate, commit=self._commit, select_by=self.cfg.select_by,
                              patience=self.cfg.patience)
        self.whitening_selection: Optional[Dict[str, Any]] = None

    def _miner(self, train_set: VPRDataset) -> Tuple[TupleMiner, np.ndarray]:
        """The tuple recipe's miner (its positives and non-negatives of every query) and its trainable queries;
        refused when no query has a tuple, or when the recipe needs difficult positives that --pos-num 0 forbids."""
        if self.cfg.pos_num < 1 and any(self.recipe.uses_difficult(g) for g in range(self.cfg.generations)):
            raise ValueError(f"recipe {self.recipe.name!r} trains on difficult positives after generation 0: "
                             "pass --pos-num >= 1")
        miner = TupleMiner.from_dataset(
            train_set, self.cfg.pos_radius, self.cfg.neg_radius, neg_num=self.cfg.neg_num,
            neg_pool=self.cfg.neg_pool, pos_num=self.cfg.pos_num, pos_pool=self.cfg.pos_pool,
            rerank=RerankConfig(self.cfg.rerank_k1, self.cfg.rerank_k2, self.cfg.rerank_lambda))
        trainable = miner.trainable_queries()
        if len(trainable) == 0:
            raise ValueError(f"{train_set.name}: no query has both a positive and {self.cfg.neg_num} negatives; check "
                             "the radii (--pos-radius/--neg-radius) and the dataset's coordinates")
        return miner, trainable

    def _epoch(self, train_set: VPRDataset) -> Any:
        """The recipe's part of an epoch: place batches with --batching places, else mined tuples."""
        if self.cfg.batching == "places":
            sampler, loss = self._place_batches(train_set)
            distillation = Distillation(lambda: self.generations.teacher, self.cfg.temperature, self.cfg.soft_weight,
                                        lambda model, inputs: global_descriptors(model, self.source, inputs))
            return PlaceEpoch(model=self.model, sampler=sampler, source=self.source, describe=self.engine,
                              loss=loss, seed=self.cfg.seed, ctx=self.ctx, autocast=self._autocast,
                              progress=self.progress, distillation=distillation)
        return TupleEpoch(model=self.model, miner=self.miner, queries=self.trainable, source=self.source,
                          num_db=train_set.num_db, describe=self.describe,
                          forward=lambda inputs, generation: self.engine(inputs, generation),
                          uses_difficult=self.recipe.uses_difficult, cfg=self.cfg, ctx=self.ctx,
                          autocast=self._autocast, progress=self.progress)

    def _place_batches(self, train_set: VPRDataset):
        """The sampler and loss of --batching places. Places come from the training set's images in the source's
        order (database, then queries); places within the negative radius of each other never share a batch."""
        places = places_from_dataset(train_set, self.cfg.pos_radius or DEFAULT_PLACE_RADIUS_M)
        exclusion = self.cfg.neg_radius if self.cfg.neg_radius is not None else train_set.train_neg_radius
        sampler = PlaceBatchSampler(places.labels, self.cfg.places_per_batch, self.cfg.images_per_place,
                                    self.cfg.seed, self.cfg.short_places, places.place_coords, exclusion,
                                    self.ctx.rank, self.ctx.world_size)
        _log.info("%s; %d batches of %d x %d per epoch", places.summary(), len(sampler), self.cfg.places_per_batch,
                  self.cfg.images_per_place)
        return sampler, multi_similarity_loss()

    # the run's progress lives in `state` (what a checkpoint restores), read and set as attributes of the Trainer
    generation, epoch = _in_state("generation"), _in_state("epoch")
    best, best_model, history = _in_state("best"), _in_state("best_model"), _in_state("history")

    @property
    def optimizer(self) -> Optional[torch.optim.Optimizer]:
        return self.optim.optimizer

    @property
    def scheduler(self) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        return self.optim.scheduler

    # ---- setup -------------------------------------------------------------------------------------------
    def _source(self, dataset: VPRDataset, cached: bool, cache_dir: Optional[PathLike], desc: str) -> Source:
        paths = list(dataset.db_images) + list(dataset.q_images)
        if cached:
            return cached_source(self.model, paths, cache_dir, self.ctx, self.cfg.eval_batch_size,
                                 self.cfg.num_workers, desc=f"{dataset.name} {desc}", progress=self.progress)
        return ImageSource(paths, self.model.input_config, self.cfg.jitter, self.cfg.num_workers)

    def _check_whitening(self) -> None:
        whitening = getattr(self.model, "whitening", None)
        dims = self.cfg.whitening_dims
        if dims is not None:
            if whitening is None:
                raise ValueError("whitening_dims chooses a whitening size, but the model has no whitening: build it "
                                 "with whitening_dim=N (N = the largest candidate)")
            if self.val_set is None:
                raise ValueError("whitening_dims chooses the whitening size on validation: pass a validation set")
            too_big = too_large(whitening, dims)
            if too_big:
                raise ValueError(f"whitening_dims {too_big} exceed the model's whitening_dim {whitening.out_dim}: "
                                 "build the model with whitening_dim = the largest candidate")
        n = min(self.cfg.pca_images, self.train_set.num_db + self.train_set.num_queries)
        if whitening is not None and not enough_to_fit(whitening, n):
            raise ValueError(
                f"the model's {whitening.out_dim}-d PCA whitening needs more than {whitening.out_dim} training images, "
                f"but {self.train_set.name} gives {n} (pca_images={self.cfg.pca_images}): pass a smaller whitening "
                "(--model-arg whitening_dim=N with N < that count, or whitening_dim=null for none)"
            )

    def _wrap(self, step: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return step
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DDP(step, device_ids=ids)

    def close(self) -> None:
        """Release the DistributedDataParallel wrapper (it holds the process group).

        Call before `torch.distributed.destroy_process_group()`: a DDP module that outlives the group is torn down
        during interpreter exit, where gloo aborts the process ("terminate called without an active exception").
        The Trainer stays usable in one process afterwards; `registry.training.shutdown(ctx, trainer)` does both.
        """
        if self.engine is not self.step:
            self.engine = self.step
            gc.collect()

    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def init_clusters(self, path: Optional[PathLike] = None) -> Optional[float]:
        """k-means on the training database's local descriptors; writes output/centroids.h5; returns alpha."""
        return init_clusters(self.model, self.source, path or self.folder.centroids,
                             indices=range(self.train_set.num_db), num_descriptors=self.cfg.cluster_descriptors,
                             per_image=self.cfg.cluster_per_image, seed=self.cfg.seed_of_clusters(), ctx=self.ctx)

    # ---- descriptors -------------------------------------------------------------------------------------
    @torch.no_grad()
    def describe(self, source: Source, indices: Sequence[int], whiten: bool = False,
                 model: Optional[nn.Module] = None, desc: str = "descriptors") -> np.ndarray:
        """L2-normalised descriptors of source items (before whitening unless `whiten`), sharded over ranks."""
        model = model or self.model
        was_training = model.training
        model.eval()

        def run(batch: Sequence[int]) -> torch.Tensor:
            x = stack_items(source, list(batch), train=False).to(self.ctx.device)
            with self._autocast():
                d = global_descriptors(model, source, x)
                if whiten and getattr(model, "whitening", None) is not None:
                    d = whiten_tensor(model.whitening, d.float())
            return d.float().cpu()

        try:
            return sharded_apply(run, list(indices), self.ctx, self.cfg.eval_batch_size, desc,
                                 self.progress).numpy()
        finally:
            model.train(was_training)

    def validate(self, whiten: bool = False) -> Dict[str, float]:
        """Recall@N (percent) on the validation set; empty without one."""
        if self.val_set is None:
            return {}
        v = self.val_set
        return self._val_recalls(self.describe(self.val_source, range(v.num_db + v.num_queries), whiten,
                                               desc="validation"))

    def _val_recalls(self, d: np.ndarray) -> Dict[str, float]:
        """Recall@N (percent) of validation descriptors (database rows first, then queries)."""
        v = self.val_set
        return descriptor_recalls(d[v.num_db :], d[: v.num_db], v, self.cfg.recall_ns, digits=None)

    # ---- the pieces ----------------------------------------------------------------------------------------
    def train_epoch(self) -> Dict[str, float]:
        """Mine and optimise over this epoch's queries; returns mean losses."""
        return self.loop.train_epoch()

    def _checkpoint(self) -> Dict[str, Any]:
        return self.state.to_checkpoint(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                        prev_negatives=self._prev_negatives(),
                                        teacher=self.generations.teacher_state(), config=self.cfg)

    def _prev_negatives(self) -> np.ndarray:
        """The miner's memory of each query's negatives; an empty one with place batches (no miner)."""
        if self.miner is None:
            return np.empty((0, self.cfg.neg_num), dtype=np.int64)
        return self.miner.prev_negatives

    def _commit(self, best_changed: bool = True) -> None:
        """Write checkpoint.pt (the one atomic commit of this epoch), then its views best.pt and log.jsonl."""
        if self.ctx.is_main:
            self.folder.commit(self._checkpoint(), self.state, best_changed)
        self.ctx.barrier()

    def _restore(self) -> None:
        """Resume: the checkpoint's model, state, mining memory, teacher, optimiser and schedule, and the centres."""
        saved = self.folder.read(self.cfg)
        self.model.load_state_dict(saved["model"])
        self.state.restore(saved)
        if self.miner is not None:
            self.miner.prev_negatives = saved["prev_negatives"].numpy().copy()
        self.generations.restore_teacher(saved["teacher"])
        self.optim.restore(saved["optimizer"], saved["scheduler"])
        if self.folder.centroids.is_file():
            attach_cluster_source(self.model.aggregator, self.folder.centroids)

    def remove_stale_files(self) -> List[Path]:
        """Delete the temporary files and staging folders a killed run left (rank 0); returns what was removed."""
        return self.folder.remove_stale_files() if self.ctx.is_main else []

    def _on_epoch(self, record: Dict[str, Any]) -> None:
        if self.ctx.is_main:
            _log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        for cb in self.callbacks:
            cb(self, record)

    # ---- the run -----------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, require_initialised_clusters: bool = True,
            final: Optional[finish.FinalEvaluation] = None) -> Dict[str, Any]:
        """Train every generation and epoch, then load the best model, fit whitening, run the `final` evaluation
        (test sets, other runtimes) and write the Hub layout and summary.json, once each."""
        start = time.time()
        if resume:
            self._restore()
            self.remove_stale_files()
            if self.ctx.is_main:
                self.folder.write_views(self.state)  # a kill after the last commit may have left them one epoch behind
        else:
            self.folder.refuse_restart()
            if require_initialised_clusters:
                require_clusters(self.model, self.model.config.get("architecture", "the model"))
            if self.ctx.is_main:
                self.folder.prepare()
            self.ctx.barrier()
            self.loop.start_generation()
            self.loop.record_start()
        self.loop.run(self._on_epoch)
        return self._finish(start, final)

    def _finish(self, start: float, final: Optional[finish.FinalEvaluation]) -> Dict[str, Any]:
        """Best model, PCA-whitening fit, final validation (every rank); then rank 0 alone runs the `final`
        evaluation and writes the Hub layout and summary.json, while the other ranks return."""
        seconds = time.time() - start
        self.model.load_state_dict(self.state.best_weights(self.model))
        finish.fit_pca(self.model, self.train_set.num_db + self.train_set.num_queries,
                       lambda pick: self.describe(self.source, pick, desc="PCA descriptors"), self.cfg)
        # the selection measures every candidate on validation, the chosen one included
        final_val = self._select_whitening() if self.cfg.whitening_dims is not None else self.validate(whiten=True)
        summary = finish.summary_of(self.best, final_val, seconds, self.history, self.whitening_selection)
        self.ctx.barrier()
        if not self.ctx.is_main:
            return summary
        if final is not None:
            summary.update(final.measure(self.model, self.train_set, self.val_set, self.cfg.eval_batch_size,
                                         self.ctx.device, self.progress))
            summary["wall_seconds"] = round(time.time() - (start if final.started is None else final.started), 1)
            summary["command"] = final.command
        self.folder.write_layout(self.model, training=self.training_facts(), recalls=self.recall_facts(summary))
        self.folder.write_summary(summary)
        return summary

    def recall_facts(self, summary: Dict[str, Any]) -> Optional[Dict[str, Dict[str, float]]]:
        """What config.json records as measured of the final model in `summary` (its validation and test rows)."""
        return finish.recall_facts(self.val_set.name if self.val_set else None, summary["final_val"],
                                   summary.get("test"))

    def _select_whitening(self) -> Dict[str, float]:
        """Validation Recall@N of each candidate whitening size (leading components of the one fit, or none);
        the model keeps the best by `select_by`. Same choice on every rank.
        Records the table in `whitening_selection`; returns the chosen candidate's recalls."""
        v = self.val_set
        raw = torch.from_numpy(self.describe(self.val_source, range(v.num_db + v.num_queries), desc="validation"))
        self.whitening_selection, recalls = finish.choose_whitening(self.model, raw, self._val_recalls,
                                                                    self.cfg.whitening_dims, self.cfg.select_by)
        if self.ctx.is_main:
            _log.info("whitening chosen on %s by %s: %s", v.name, self.cfg.select_by,
                      finish.describe_choice(self.whitening_selection))
        return recalls

    def training_facts(self) -> Dict[str, Any]:
        """What config.json and the model card record about this training."""
        return finish.training_facts(self.train_set.name, self.val_set.name if self.val_set else None,
                                     self.recipe.name, self.best, self.cfg, self.ctx.world_size,
                                     self.whitening_selection)
