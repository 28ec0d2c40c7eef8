"""The epoch loop: each epoch trains on what the recipe's epoch gives (`TupleEpoch`: tuples mined for caches of
queries, one optimiser step per batch); after it, validation picks the best model so far and the epoch is committed.
Random streams come from (seed, generation, epoch, rank), so a resumed run draws the same numbers as an uninterrupted
one. The loop and the recipe's epoch receive what they use (model, miner, optimiser, state, validation, commit), not
the Trainer."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._util.distributed import DistContext
from .config import TrainConfig
from .generations import Generations
from .mining import TrainTuple, TupleMiner
from .optim import Optimisation
from .recipes import global_descriptors
from .sources import Source, tuple_loader
from .state import TrainState

# descriptors of source items: (source, indices, desc=...) -> (N, D) array, sharded over ranks
Describe = Callable[..., np.ndarray]
# the loss of one batch: (inputs, generation) -> (loss, its parts)
Forward = Callable[[torch.Tensor, int], Tuple[torch.Tensor, Dict[str, float]]]


class Step(nn.Module):
    """Model + recipe as one module, so DistributedDataParallel sees the whole loss computation."""

    def __init__(self, model: nn.Module, recipe: Any, source: Source, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.recipe, self.source, self.cfg = recipe, source, cfg
        object.__setattr__(self, "teacher", None)  # frozen, not a submodule: DDP must not sync it

    def forward(self, inputs: torch.Tensor, generation: int):
        if self.cfg.batching == "places":  # the loss needs every pair of the batch: its descriptors leave DDP
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


class TupleEpoch:
    """The tuple recipe's part of an epoch: `batches` mines tuples for caches of this epoch's queries (from the
    current model's descriptors) and yields this rank's batches of them; `step` is one optimiser step on a batch.
    Another recipe's epoch provides the same `run(generation, epoch, optimizer)`."""

    def __init__(self, *, model: nn.Module, miner: TupleMiner, queries: np.ndarray, source: Source, num_db: int,
                 describe: Describe, forward: Forward, uses_difficult: Callable[[int], bool], cfg: TrainConfig,
                 ctx: DistContext, autocast: Callable[[], ContextManager], progress: bool) -> None:
        self.model, self.miner, self.queries, self.source, self.num_db = model, miner, queries, source, num_db
        self.describe, self.forward, self.uses_difficult = describe, forward, uses_difficult
        self.cfg, self.ctx, self.autocast, self.progress = cfg, ctx, autocast, progress

    def run(self, generation: int, epoch: int, optimizer: torch.optim.Optimizer) -> Dict[str, float]:
        """Mine and optimise over this epoch's queries; returns mean losses (averaged over ranks)."""
        rng = epoch_rng(self.cfg.seed, generation, epoch, self.ctx.rank)
        queries = rng.permutation(self.queries)[: self.cfg.queries_per_epoch]
        logs: List[Dict[str, float]] = []
        with tqdm(total=len(queries), desc=f"gen {generation} epoch {epoch}", unit="tuple",
                  disable=not self.progress) as bar:
            for inputs in self.batches(queries, rng, generation):
                logs.append(self.step(inputs, generation, epoch, optimizer))
                bar.update(len(inputs) * self.ctx.world_size)
                bar.set_postfix(loss=f"{np.mean([r['loss'] for r in logs]):.4f}")
        return {k: self.ctx.all_reduce_mean(float(np.mean([r[k] for r in logs]))) for k in logs[0]}

    def batches(self, queries: np.ndarray, rng: np.random.Generator, generation: int) -> Iterator[torch.Tensor]:
        """This rank's batches of tuples, on the device: each cache of queries is mined just before its batches."""
        for start in range(0, len(queries), self.cfg.cache_size):
            tuples = self._mine(queries[start : start + self.cfg.cache_size], rng, generation)
            items = [[self.num_db + u.query, u.positive, *u.negatives.tolist(), *u.difficult.tolist()]
                     for u in tuples]
            self.model.train()
            share = rank_share(items, self.ctx.rank, self.ctx.world_size)
            for inputs in tuple_loader(self.source, share, self.cfg.batch_size):
                yield inputs.to(self.ctx.device, non_blocking=True)

    def _mine(self, chunk: np.ndarray, rng: np.random.Generator, generation: int) -> List[TrainTuple]:
        pools = [self.miner.negative_pool(int(q), rng) for q in chunk]
        db_ids = self.miner.needed_database(chunk, pools)
        q_desc = self.describe(self.source, [self.num_db + int(q) for q in chunk], desc="mining: queries")
        db_desc = self.describe(self.source, db_ids.tolist(), desc="mining: database")
        return self.miner.mine(chunk, pools, q_desc, db_ids, db_desc, rng, difficult=self.uses_difficult(generation))

    def step(self, inputs: torch.Tensor, generation: int, epoch: int,
             optimizer: torch.optim.Optimizer) -> Dict[str, float]:
        """One optimiser step on a batch; its loss and the loss's parts."""
        optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, parts = self.forward(inputs, generation)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)} at generation {generation}, epoch {epoch}: lower "
                                     "--lr (or check the data); the last checkpoint is kept")
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **parts}


def stale_epochs(history: Sequence[Dict[str, Any]], generation: int) -> int:
    """Trained epochs of `generation`, counted back from the newest, since the last one that improved the best
    validation score (the history's own records, so a resumed run counts the same)."""
    count = 0
    for record in reversed(history):
        if record.get("generation") != generation or record.get("epoch", 0) == 0 or record.get("best"):
            break
        count += 1
    return count


class EpochLoop:
    """Runs a run's epochs and generations over `state`: the recipe's epoch (`epoch`), the schedule step,
    validation, the best model, the commit (`commit(best_changed)`), and each generation's start (the best model so
    far, the teacher, a fresh optimiser)."""

    def __init__(self, *, model: nn.Module, state: TrainState, generations: Generations, optim: Optimisation,
                 epoch: Any, validate: Callable[[], Dict[str, float]], commit: Callable[[bool], None],
                 select_by: str, patience: Optional[int] = None) -> None:
        self.model, self.state, self.generations, self.optim, self.epoch = model, state, generations, optim, epoch
        self.validate, self.commit, self.select_by, self.patience = validate, commit, select_by, patience

    def start_generation(self) -> None:
        """Fresh optimiser; from generation 1 on, start from the best model so far, which is also the teacher."""
        self.generations.start(self.state.generation, self.state.best_weights(self.model))
        self.optim.renew()

    def run(self, on_epoch: Callable[[Dict[str, Any]], None]) -> None:
        """Train from where `state` is to the end of the last generation; `on_epoch(record)` after each committed
        epoch."""
        state = self.state
        while not self.generations.done(state.generation):
            if self.patience is not None and stale_epochs(state.history, state.generation) >= self.patience:
                state.epoch = self.generations.cfg.epochs_of(state.generation)  # early stop: this generation is over
            generation, epoch, starts = self.generations.next(state.generation, state.epoch)
            if generation != state.generation:
                state.generation, state.epoch = generation, epoch
                if starts:
                    self.start_generation()
                continue
            t0 = time.time()
            losses = self.train_epoch()
            on_epoch(self.end_epoch(losses, time.time() - t0))

    def train_epoch(self) -> Dict[str, float]:
        """The recipe's epoch at `state`'s generation and epoch; its mean losses."""
        return self.epoch.run(self.state.generation, self.state.epoch, self.optim.optimizer)

    def record_start(self) -> None:
        """Validate the initial model as epoch 0, so training that only degrades it cannot win the selection.

        Commits the epoch-0 state, so a run killed later always resumes from a checkpoint."""
        recalls = self.validate()
        if recalls:
            self.state.record({"generation": 0, "epoch": 0, **{f"val_{k}": v for k, v in recalls.items()}},
                              recalls[self.select_by], recalls, self.model)
        self.commit(True)

    def end_epoch(self, losses: Dict[str, float], seconds: float) -> Dict[str, Any]:
        """Step the schedule, validate, keep the model if it is the best so far, commit the epoch; its record."""
        state = self.state
        self.optim.scheduler.step()
        recalls = self.validate()
        state.epoch += 1
        record = {"generation": state.generation, "epoch": state.epoch, "lr": self.optim.lr,
                  **losses, **{f"val_{k}": v for k, v in recalls.items()}, "seconds": round(seconds, 1)}
        improved = state.record(record, recalls.get(self.select_by, -losses["loss"]), recalls, self.model)
        self.commit(improved)
        return record
