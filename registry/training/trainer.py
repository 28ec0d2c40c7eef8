"""The generic trainer: mining per cache of queries, optimisation, validation, checkpoints, whitening, Hub layout.

Output folder: the Hub layout (config.json, model.safetensors, centroids.h5, pca.h5, README.md) once
training ends, and `train/` with `checkpoint.pt` (last epoch), `best.pt` (best validation model) and
`log.jsonl`. Random streams are derived from (seed, generation, epoch, rank), so a resumed run draws
the same numbers as an uninterrupted one.

One atomic write commits an epoch: `checkpoint.pt` holds the training state, the best model and the whole
history. `best.pt` and `log.jsonl` are views of it, rewritten (atomically) after each commit and again on
resume, so a kill between any two writes loses nothing and never mixes two epochs. Temporary files and
staging folders a kill leaves behind are removed when a run starts or resumes.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._atomic import atomic_path
from ..datasets.base import VPRDataset
from ..distributed import DistContext, sharded_apply
from ..evaluation.recall_table import descriptor_recalls
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .clusters import attach_cluster_source, init_clusters, require_clusters
from .config import RESUME_CRITICAL, TrainConfig
from .feature_cache import cached_source
from .mining import RerankConfig, TrainTuple, TupleMiner
from .recipes import get_recipe, global_descriptors
from .sources import ImageSource, Source, stack_items, tuple_loader

_log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Callback = Callable[["Trainer", Dict[str, Any]], None]
CENTROIDS = "centroids.h5"
CHECKPOINT, BEST, LOG, SUMMARY = "checkpoint.pt", "best.pt", "log.jsonl", "summary.json"


def select_whitening(
    whitening: nn.Module,
    dims: Sequence[Optional[int]],
    measure: Callable[[Optional[nn.Module]], Dict[str, Any]],
    score: Callable[[Dict[str, Any]], float],
) -> Tuple[List[Dict[str, Any]], int]:
    """Choose a whitening size on validation: one row {"dim": dim, **measure(cut)} per candidate, where `cut` is the
    fitted `whitening` truncated to its `dim` leading components (None for dim None: no whitening), and the index
    of the row with the highest `score(row)`; ties go to the candidate listed first. The trainer's
    `whitening_dims` and the whitening sweep (registry.training.sweep) both choose with it."""
    rows = [{"dim": dim, **measure(None if dim is None else whitening.truncated(dim))} for dim in dims]
    best = max(range(len(rows)), key=lambda i: (score(rows[i]), -i))
    return rows, best


class _Step(nn.Module):
    """Model + recipe as one module, so DistributedDataParallel sees the whole loss computation."""

    def __init__(self, model: nn.Module, recipe: Any, source: Source, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.recipe, self.source, self.cfg = recipe, source, cfg
        object.__setattr__(self, "teacher", None)  # frozen, not a submodule: DDP must not sync it

    def forward(self, inputs: torch.Tensor, generation: int):
        return self.recipe.loss(self.model, self.teacher, self.source, inputs, self.cfg, generation)


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
        self.train_dir = self.output / "train"
        self.progress = progress and self.ctx.is_main
        self.callbacks = list(callbacks)
        self.recipe = get_recipe(self.cfg.recipe, model)
        if self.cfg.generations > 1 and not self.recipe.supports_generations:
            raise ValueError(f"recipe {self.recipe.name!r} has no teacher, so generations > 1 would repeat generation "
                             "0: use --generations 1, or a recipe with generations (ClusVPR's 'pyramid')")
        if self.cfg.pos_num < 1 and any(self.recipe.uses_difficult(g) for g in range(self.cfg.generations)):
            raise ValueError(f"recipe {self.recipe.name!r} trains on difficult positives after generation 0: "
                             "pass --pos-num >= 1")
        self.miner = TupleMiner.from_dataset(
            train_set, self.cfg.pos_radius, self.cfg.neg_radius, neg_num=self.cfg.neg_num,
            neg_pool=self.cfg.neg_pool, pos_num=self.cfg.pos_num, pos_pool=self.cfg.pos_pool,
            rerank=RerankConfig(self.cfg.rerank_k1, self.cfg.rerank_k2, self.cfg.rerank_lambda))
        self.trainable = self.miner.trainable_queries()
        if len(self.trainable) == 0:
            raise ValueError(f"{train_set.name}: no query has both a positive and {self.cfg.neg_num} negatives; check "
                             "the radii (--pos-radius/--neg-radius) and the dataset's coordinates")
        self._check_whitening()
        cache_dir = cache_dir if cache_dir is not None else (self.output / "feature_cache" if cache_features else None)
        self.source = self._source(train_set, cache_features, cache_dir, "training features")
        self.val_source = self._source(val_set, cache_features, cache_dir, "validation features") \
            if val_set is not None else None
        self.amp = self.ctx.device.type == "cuda" if self.cfg.amp is None else bool(self.cfg.amp)
        self.step = _Step(self.model, self.recipe, self.source, self.cfg)
        self.engine: nn.Module = self._wrap(self.step)
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None
        self.generation, self.epoch = 0, 0
        self.best: Dict[str, Any] = {"score": -math.inf}
        self.best_model: Optional[Dict[str, torch.Tensor]] = None  # CPU copy of the best weights so far
        self.history: List[Dict[str, Any]] = []
        self.whitening_selection: Optional[Dict[str, Any]] = None

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
            too_big = [d for d in dims if d is not None and d > whitening.out_dim]
            if too_big:
                raise ValueError(f"whitening_dims {too_big} exceed the model's whitening_dim {whitening.out_dim}: "
                                 "build the model with whitening_dim = the largest candidate")
        n = min(self.cfg.pca_images, self.train_set.num_db + self.train_set.num_queries)
        if whitening is not None and n <= whitening.out_dim:
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

    def _new_optimizer(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: check --train-layers")
        if self.cfg.aggregator_lr_mult != 1.0:  # two groups: the backbone at lr, the aggregator at lr x mult
            head = {id(p) for p in self.model.aggregator.parameters()}
            groups = [{"params": [p for p in params if id(p) not in head]},
                      {"params": [p for p in params if id(p) in head], "lr": self.cfg.lr * self.cfg.aggregator_lr_mult}]
            params = [g for g in groups if g["params"]]
        if self.cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                                             weight_decay=self.cfg.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, self.cfg.lr_step, self.cfg.lr_gamma)

    def init_clusters(self, path: Optional[PathLike] = None) -> Optional[float]:
        """k-means on the training database's local descriptors; writes output/centroids.h5; returns alpha."""
        return init_clusters(self.model, self.source, path or self.output / CENTROIDS,
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
                    d = torch.nn.functional.normalize(model.whitening(d.float()), dim=-1)
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

    # ---- one epoch ---------------------------------------------------------------------------------------
    def _seed_epoch(self) -> np.random.Generator:
        """Mining RNG (identical on every rank) and this rank's torch seed, both from (seed, generation, epoch)."""
        base = [self.cfg.seed, self.generation, self.epoch]
        torch.manual_seed(int(np.random.SeedSequence(base + [self.ctx.rank]).generate_state(1)[0]))
        return np.random.default_rng(base)

    def _mine(self, chunk: np.ndarray, rng: np.random.Generator) -> List[TrainTuple]:
        pools = [self.miner.negative_pool(int(q), rng) for q in chunk]
        db_ids = self.miner.needed_database(chunk, pools)
        nd = self.train_set.num_db
        q_desc = self.describe(self.source, [nd + int(q) for q in chunk], desc="mining: queries")
        db_desc = self.describe(self.source, db_ids.tolist(), desc="mining: database")
        return self.miner.mine(chunk, pools, q_desc, db_ids, db_desc, rng,
                               difficult=self.recipe.uses_difficult(self.generation))

    def _my_tuples(self, tuples: List[TrainTuple]) -> List[List[int]]:
        """This rank's share as source item lists; every rank gets the same count (wrapping round)."""
        nd = self.train_set.num_db
        items = [[nd + t.query, t.positive, *t.negatives.tolist(), *t.difficult.tolist()] for t in tuples]
        per_rank = math.ceil(len(items) / self.ctx.world_size)
        return [items[(self.ctx.rank + self.ctx.world_size * i) % len(items)] for i in range(per_rank)]

    def _optimise(self, tuples: List[TrainTuple], bar: tqdm) -> List[Dict[str, float]]:
        self.model.train()
        logs = []
        for inputs in tuple_loader(self.source, self._my_tuples(tuples), self.cfg.batch_size):
            inputs = inputs.to(self.ctx.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, parts = self.engine(inputs, self.generation)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at generation {self.generation}, epoch "
                                         f"{self.epoch}: lower --lr (or check the data); the last checkpoint is kept")
            loss.backward()
            self.optimizer.step()
            logs.append({"loss": float(loss.detach()), **parts})
            bar.update(len(inputs) * self.ctx.world_size)
            bar.set_postfix(loss=f"{np.mean([r['loss'] for r in logs]):.4f}")
        return logs

    def train_epoch(self) -> Dict[str, float]:
        """Mine and optimise over this epoch's queries; returns mean losses."""
        rng = self._seed_epoch()
        queries = rng.permutation(self.trainable)[: self.cfg.queries_per_epoch]
        logs: List[Dict[str, float]] = []
        with tqdm(total=len(queries), desc=f"gen {self.generation} epoch {self.epoch}", unit="tuple",
                  disable=not self.progress) as bar:
            for start in range(0, len(queries), self.cfg.cache_size):
                tuples = self._mine(queries[start : start + self.cfg.cache_size], rng)
                logs += self._optimise(tuples, bar)
        return {k: self.ctx.all_reduce_mean(float(np.mean([r[k] for r in logs]))) for k in logs[0]}

    # ---- generations, checkpoints ------------------------------------------------------------------------
    def _start_generation(self) -> None:
        """Fresh optimiser; from generation 1 on, start from the best model so far, which is also the teacher."""
        if self.generation > 0:
            self.model.load_state_dict(self._best_weights())
        teacher = None
        if self.recipe.uses_teacher(self.generation):
            teacher = copy.deepcopy(self.model).eval()
            teacher.requires_grad_(False)
        object.__setattr__(self.step, "teacher", teacher)
        self._new_optimizer()

    def _state(self) -> Dict[str, Any]:
        teacher = self.step.teacher
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "generation": self.generation, "epoch": self.epoch,
            "best": self.best, "best_model": self.best_model, "history": self.history,
            "prev_negatives": torch.from_numpy(self.miner.prev_negatives),
            "teacher": teacher.state_dict() if teacher is not None else None, "config": self.cfg.to_dict(),
        }

    def _best_weights(self) -> Dict[str, torch.Tensor]:
        """The best model's weights (the current ones before any epoch was measured)."""
        return self.best_model if self.best_model is not None else self.model.state_dict()

    def _keep_best(self) -> None:
        self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _restore(self) -> None:
        state = load_checkpoint(self.train_dir / CHECKPOINT)
        # an option the checkpoint predates had its default value then
        saved = {**TrainConfig().to_dict(), **state["config"]}
        changed = [k for k in RESUME_CRITICAL if saved.get(k) != self.cfg.to_dict().get(k)]
        if changed:
            raise CheckpointError(
                "the checkpoint was written with other options: " + ", ".join(
                    f"{k}={saved.get(k)!r} (now {self.cfg.to_dict().get(k)!r})" for k in changed)
                + "; resume with the original options, or start a new run in another --output folder")
        self.model.load_state_dict(state["model"])
        self.generation, self.epoch = int(state["generation"]), int(state["epoch"])
        self.best, self.history = state["best"], list(state["history"])
        self.best_model = state.get("best_model")
        if self.best_model is None and (self.train_dir / BEST).is_file():  # a checkpoint of an earlier version
            self.best_model = load_checkpoint(self.train_dir / BEST)["model"]
        self.miner.prev_negatives = state["prev_negatives"].numpy().copy()
        if state["teacher"] is not None:
            teacher = copy.deepcopy(self.model)
            teacher.load_state_dict(state["teacher"])
            teacher.eval().requires_grad_(False)
            object.__setattr__(self.step, "teacher", teacher)
        self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if (self.output / CENTROIDS).is_file():
            attach_cluster_source(self.model.aggregator, self.output / CENTROIDS)

    def _record_start(self) -> None:
        """Validate the initial model as epoch 0, so training that only degrades it cannot win the selection.

        Commits the epoch-0 state, so a run killed later always resumes from a checkpoint."""
        recalls = self.validate()
        if recalls:
            self.best = {"score": recalls[self.cfg.select_by], "generation": 0, "epoch": 0, "recalls": recalls}
            self._keep_best()
            self.history.append({"generation": 0, "epoch": 0, **{f"val_{k}": v for k, v in recalls.items()},
                                 "best": True})
        self._commit()

    def _end_epoch(self, losses: Dict[str, float], seconds: float) -> None:
        self.scheduler.step()
        recalls = self.validate()
        self.epoch += 1
        record = {"generation": self.generation, "epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"],
                  **losses, **{f"val_{k}": v for k, v in recalls.items()}, "seconds": round(seconds, 1)}
        score = recalls.get(self.cfg.select_by, -losses["loss"])
        improved = score > self.best["score"]
        if improved:
            self.best = {"score": score, "generation": self.generation, "epoch": self.epoch, "recalls": recalls}
            self._keep_best()
        record["best"] = improved
        self.history.append(record)
        self._commit(best_changed=improved)
        if self.ctx.is_main:
            _log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        for cb in self.callbacks:
            cb(self, record)

    def _commit(self, best_changed: bool = True) -> None:
        """Write checkpoint.pt (the one atomic commit of this epoch), then its views best.pt and log.jsonl."""
        if self.ctx.is_main:
            save_checkpoint(self.train_dir / CHECKPOINT, self._state())
            self._write_views(best_changed)
        self.ctx.barrier()

    def _write_views(self, best: bool = True) -> None:
        """best.pt and log.jsonl as the committed checkpoint says (each written atomically, rank 0 only)."""
        if best and self.best_model is not None:
            save_checkpoint(self.train_dir / BEST, {"model": self.best_model, **self.best})
        with atomic_path(self.train_dir / LOG) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history), encoding="utf-8")

    def remove_stale_files(self) -> List[Path]:
        """Delete the temporary files and staging folders a killed run left (rank 0); returns what was removed."""
        if not self.ctx.is_main:
            return []
        found = [p for folder in (self.train_dir, self.output) if folder.is_dir() for p in folder.glob(".*.tmp")]
        if self.output.parent.is_dir():  # save_pretrained stages the layout beside the output folder (mkdtemp)
            staged = re.compile(rf"\.{re.escape(self.output.name)}\.[a-z0-9_]{{8}}\.tmp")
            found += [p for p in self.output.parent.glob(f".{self.output.name}.*.tmp") if staged.fullmatch(p.name)]
        for path in found:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return found

    # ---- the run -----------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, require_initialised_clusters: bool = True) -> Dict[str, Any]:
        """Train every generation and epoch, then load the best model, fit whitening and write the Hub layout."""
        start = time.time()
        if resume:
            self._restore()
            self.remove_stale_files()
            if self.ctx.is_main:
                self._write_views()  # a kill after the last commit may have left them one epoch behind
        else:
            if (self.train_dir / CHECKPOINT).exists():
                raise FileExistsError(f"{self.train_dir / CHECKPOINT} exists: pass --resume to continue that "
                                      "run, or choose another --output folder")
            if require_initialised_clusters:
                require_clusters(self.model, self.model.config.get("architecture", "the model"))
            if self.ctx.is_main:
                self.train_dir.mkdir(parents=True, exist_ok=True)
                self.remove_stale_files()
                for view in (BEST, LOG):  # left by a run killed before its first commit
                    (self.train_dir / view).unlink(missing_ok=True)
            self.ctx.barrier()
            self._start_generation()
            self._record_start()
        while self.generation < self.cfg.generations:
            if self.epoch >= self.cfg.epochs_of(self.generation):
                self.generation, self.epoch = self.generation + 1, 0
                if self.generation < self.cfg.generations:
                    self._start_generation()
                continue
            t0 = time.time()
            losses = self.train_epoch()
            self._end_epoch(losses, time.time() - t0)
        return self._finish(time.time() - start)

    def _finish(self, seconds: float) -> Dict[str, Any]:
        """Best model, PCA-whitening fit, final validation, Hub layout (rank 0 writes; others return)."""
        self.model.load_state_dict(self._best_weights())
        if getattr(self.model, "whitening", None) is not None:
            n = self.train_set.num_db + self.train_set.num_queries
            rng = np.random.default_rng(self.cfg.seed)
            pick = np.sort(rng.choice(n, size=min(self.cfg.pca_images, n), replace=False))
            descs = self.describe(self.source, pick.tolist(), desc="PCA descriptors")
            self.model.fit_whitening(torch.from_numpy(descs))
        # the selection measures every candidate on validation, the chosen one included
        final_val = self._select_whitening() if self.cfg.whitening_dims is not None else self.validate(whiten=True)
        summary = {"best": self.best, "final_val": final_val, "train_seconds": round(seconds, 1),
                   "history": self.history}
        if self.whitening_selection is not None:
            summary["whitening_selection"] = self.whitening_selection
        if self.ctx.is_main:
            self.model.save_pretrained(self.output, training=self.training_facts(), recalls=self._recall_facts(summary))
            with atomic_path(self.train_dir / SUMMARY) as tmp:
                tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        self.ctx.barrier()
        return summary

    def _select_whitening(self) -> Dict[str, float]:
        """Validation Recall@N of each candidate whitening size (leading components of the one fit, or none);
        the model keeps the best by `select_by` (`select_whitening`). Same choice on every rank.
        Records the table in `whitening_selection`; returns the chosen candidate's recalls."""
        v = self.val_set
        raw = torch.from_numpy(self.describe(self.val_source, range(v.num_db + v.num_queries), desc="validation"))

        @torch.no_grad()
        def measure(cut: Optional[nn.Module]) -> Dict[str, float]:
            return self._val_recalls((raw if cut is None else cut.to("cpu")(raw.float())).numpy())

        rows, best = select_whitening(self.model.whitening, self.cfg.whitening_dims, measure,
                                      lambda row: row[self.cfg.select_by])
        chosen = rows[best]["dim"]
        self.model.set_whitening_dim(chosen)
        if self.ctx.is_main:
            _log.info("whitening chosen on %s by %s: %s (%s)", v.name, self.cfg.select_by,
                      chosen if chosen is not None else "none",
                      ", ".join(f"{r['dim'] or 'none'}: {r[self.cfg.select_by]:.2f}" for r in rows))
        self.whitening_selection = {"chosen": chosen, "by": self.cfg.select_by, "candidates": rows}
        return {k: r for k, r in rows[best].items() if k != "dim"}

    def training_facts(self) -> Dict[str, Any]:
        """What config.json and the model card record about this training."""
        return {"datasets": [self.train_set.name], "validation": self.val_set.name if self.val_set else None,
                "recipe": self.recipe.name, "best": {k: v for k, v in self.best.items() if k != "score"},
                "options": self.cfg.to_dict(), "world_size": self.ctx.world_size,
                **({"whitening_selection": self.whitening_selection} if self.whitening_selection else {})}

    def _recall_facts(self, summary: Dict[str, Any]) -> Optional[Dict[str, Dict[str, float]]]:
        return {self.val_set.name: summary["final_val"]} if self.val_set is not None and summary["final_val"] else None
