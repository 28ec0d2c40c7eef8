"""The epoch loop: each epoch mines tuples for caches of queries and optimises on them; after it, validation picks
the best model so far and the epoch is committed. Random streams come from (seed, generation, epoch, rank), so a
resumed run draws the same numbers as an uninterrupted one."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .mining import TrainTuple
from .place_batch import train_place_epoch
from .recipes import global_descriptors
from .sources import Source, tuple_loader


class Step(nn.Module):
    """Model + recipe as one module, so DistributedDataParallel sees the whole loss computation."""

    def __init__(self, model: nn.Module, recipe: Any, source: Source, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.recipe, self.source, self.cfg = recipe, source, cfg
        object.__setattr__(self, "teacher", None)  # frozen, not a submodule: DDP must not sync it

    def forward(self, inputs: torch.Tensor, generation: int):
        if self.cfg.batching == "places":  # the loss needs the whole batch's pairs: descriptors out of DDP
            return global_descriptors(self.model, self.source, inputs)
        return self.recipe.loss(self.model, self.teacher, self.source, inputs, self.cfg, generation)


def epoch_rng(seed: int, generation: int, epoch: int, rank: int) -> np.random.Generator:
    """Seed this rank's torch stream from (seed, generation, epoch, rank); return the mining RNG of the epoch, the
    same on every rank (from (seed, generation, epoch))."""
    base = [seed, generation, epoch]
    torch.manual_seed(int(np.random.SeedSequence(base + [rank]).generate_state(1)[0]))
    return np.random.default_rng(base)


def rank_share(items: Sequence[Any], rank: int, world_size: int) -> List[Any]:
    """This rank's share of `items`, every `world_size`-th from `rank`; every rank gets the same count, wrapping
    round to the start, so DDP's ranks take the same number of steps."""
    per_rank = math.ceil(len(items) / world_size)
    return [items[(rank + world_size * i) % len(items)] for i in range(per_rank)]


class EpochLoop:
    """Runs a Trainer's epochs and generations: mining, optimisation, validation, the best model, the commit.

    It works on the `registry.training.Trainer` it is given (its model, optimiser, miner, sources, state, ...), which
    it does not import: the Trainer is built from this loop."""

    def __init__(self, trainer: Any) -> None:
        self.t = trainer

    def run(self, on_epoch: Callable[[Dict[str, Any]], None]) -> None:
        """Train from where the trainer's state is to the end of the last generation; `on_epoch(record)` after each
        committed epoch."""
        t, state = self.t, self.t.state
        while not t.generations.done(state.generation):
            generation, epoch, starts = t.generations.next(state.generation, state.epoch)
            if generation != state.generation:
                state.generation, state.epoch = generation, epoch
                if starts:
                    t._start_generation()
                continue
            t0 = time.time()
            losses = self.train_epoch()
            on_epoch(self.end_epoch(losses, time.time() - t0))

    def train_epoch(self) -> Dict[str, float]:
        """Mine and optimise over this epoch's queries; returns mean losses."""
        t = self.t
        rng = epoch_rng(t.cfg.seed, t.state.generation, t.state.epoch, t.ctx.rank)
        if t.cfg.batching == "places":
            return self._place_epoch()
        queries = rng.permutation(t.trainable)[: t.cfg.queries_per_epoch]
        logs: List[Dict[str, float]] = []
        with tqdm(total=len(queries), desc=f"gen {t.state.generation} epoch {t.state.epoch}", unit="tuple",
                  disable=not t.progress) as bar:
            for start in range(0, len(queries), t.cfg.cache_size):
                tuples = self._mine(queries[start : start + t.cfg.cache_size], rng)
                logs += self._optimise(tuples, bar)
        return {k: t.ctx.all_reduce_mean(float(np.mean([r[k] for r in logs]))) for k in logs[0]}

    def _place_epoch(self) -> Dict[str, float]:
        t, gen, epoch = self.t, self.t.state.generation, self.t.state.epoch
        with tqdm(total=len(t.place_sampler), desc=f"gen {gen} epoch {epoch}", unit="batch",
                  disable=not t.progress) as bar:
            logs = train_place_epoch(t.model, t.source, t.place_sampler, t.place_loss, t.optimizer,
                                     lambda x: t.engine(x, gen), gen, epoch, t.ctx.device, t._autocast, bar)
        return {"loss": t.ctx.all_reduce_mean(float(np.mean([r["loss"] for r in logs])))}

    def _mine(self, chunk: np.ndarray, rng: np.random.Generator) -> List[TrainTuple]:
        t = self.t
        pools = [t.miner.negative_pool(int(q), rng) for q in chunk]
        db_ids = t.miner.needed_database(chunk, pools)
        nd = t.train_set.num_db
        q_desc = t.describe(t.source, [nd + int(q) for q in chunk], desc="mining: queries")
        db_desc = t.describe(t.source, db_ids.tolist(), desc="mining: database")
        return t.miner.mine(chunk, pools, q_desc, db_ids, db_desc, rng,
                            difficult=t.recipe.uses_difficult(t.state.generation))

    def _optimise(self, tuples: List[TrainTuple], bar: tqdm) -> List[Dict[str, float]]:
        t = self.t
        nd = t.train_set.num_db
        items = [[nd + u.query, u.positive, *u.negatives.tolist(), *u.difficult.tolist()] for u in tuples]
        t.model.train()
        logs = []
        for inputs in tuple_loader(t.source, rank_share(items, t.ctx.rank, t.ctx.world_size), t.cfg.batch_size):
            inputs = inputs.to(t.ctx.device, non_blocking=True)
            t.optimizer.zero_grad(set_to_none=True)
            with t._autocast():
                loss, parts = t.engine(inputs, t.state.generation)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at generation {t.state.generation}, epoch "
                                         f"{t.state.epoch}: lower --lr (or check the data); the last checkpoint is "
                                         "kept")
            loss.backward()
            t.optimizer.step()
            logs.append({"loss": float(loss.detach()), **parts})
            bar.update(len(inputs) * t.ctx.world_size)
            bar.set_postfix(loss=f"{np.mean([r['loss'] for r in logs]):.4f}")
        return logs

    def record_start(self) -> None:
        """Validate the initial model as epoch 0, so training that only degrades it cannot win the selection.

        Commits the epoch-0 state, so a run killed later always resumes from a checkpoint."""
        t = self.t
        recalls = t.validate()
        if recalls:
            t.state.record({"generation": 0, "epoch": 0, **{f"val_{k}": v for k, v in recalls.items()}},
                           recalls[t.cfg.select_by], recalls, t.model)
        t._commit()

    def end_epoch(self, losses: Dict[str, float], seconds: float) -> Dict[str, Any]:
        """Step the schedule, validate, keep the model if it is the best so far, commit the epoch; its record."""
        t, state = self.t, self.t.state
        t.scheduler.step()
        recalls = t.validate()
        state.epoch += 1
        record = {"generation": state.generation, "epoch": state.epoch, "lr": t.optimizer.param_groups[0]["lr"],
                  **losses, **{f"val_{k}": v for k, v in recalls.items()}, "seconds": round(seconds, 1)}
        improved = state.record(record, recalls.get(t.cfg.select_by, -losses["loss"]), recalls, t.model)
        t._commit(best_changed=improved)
        return record
