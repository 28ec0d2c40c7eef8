"""The place-batch recipe's pieces (GSV-Cities, Ali-bey et al., Neurocomputing 2022; MixVPR, BoQ and SALAD train
this way): batches of P places x K images of each place, and a multi-similarity loss (Wang et al., CVPR 2019) over
the pairs its online miner keeps, with no offline mining.

`PlaceBatchSampler` draws the batches of one epoch from a seed and the epoch number alone (a resumed run redraws
the same batches), gives each torchrun rank its share of the places, and keeps places closer than `exclusion` to
each other out of one batch (on an aligned route, neighbouring places within the ground-truth tolerance show the
same scene and must not count as negatives of each other).

Generations (ClusVPR's pyramid, or any recipe whose `uses_teacher(g)` is true): generation g >= 1 starts from the
best model so far, whose frozen copy is the teacher, and adds `soft_weight` x `batch_similarity_kl` to the
multi-similarity loss of the same P x K batch. For the N = P*K images of a batch, with the student's descriptors
s_i and the teacher's t_i (global, L2-normalised, before whitening), each image i has two distributions over the
other N - 1 images j != i of the batch: the teacher's q_i(j) = softmax_j(t_i . t_j / T_g) at the generation's
temperature T_g = temperatures[g], and the student's p_i(j) = softmax_j(s_i . s_j / T_0) at the student's
temperature temperatures[0]; the soft loss is the mean over i of KL(q_i || p_i) (`losses.soft_kl`). It is the tuple
recipe's soft cross-entropy (`losses.soft_cross_entropy`) minus the teacher's entropy, so it has the same gradient
(the entropy is constant for the student) while the logged `soft` is 0 where the student matches the teacher; over
the pairs of the place batch instead of an anchor's difficult positives' regions.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .losses import soft_kl

SHORT_PLACES = ("replace", "skip")
# GSV-Cities' multi-similarity settings
MS_ALPHA, MS_BETA, MS_BASE, MS_EPSILON = 1.0, 50.0, 0.0, 0.1


class PlaceBatchSampler:
    """Epoch -> list of batches, each an array of P*K image indices (place-major: K images of place 1, then of
    place 2, ...). Places with fewer than K images (but at least 2) are drawn with replacement (`short='replace'`)
    or left out (`short='skip'`); places with one image are always left out (they give no positive pair)."""

    def __init__(self, labels: np.ndarray, places_per_batch: int, images_per_place: int, seed: int = 0,
                 short: str = "replace", place_coords: Optional[np.ndarray] = None, exclusion: float = 0.0,
                 rank: int = 0, world_size: int = 1) -> None:
        if places_per_batch < 2:
            raise ValueError(f"places_per_batch must be >= 2 (a batch needs negatives), got {places_per_batch}")
        if images_per_place < 2:
            raise ValueError(f"images_per_place must be >= 2 (a place needs a positive pair), got {images_per_place}")
        if short not in SHORT_PLACES:
            raise ValueError(f"short must be one of {SHORT_PLACES}, got {short!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        labels = np.asarray(labels, dtype=np.int64)
        # images of each place in one sort (a scan per place would cost places x images)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0)
        self.members = np.split(order, np.cumsum(counts)[:-1]) if len(labels) else []
        least = 2 if short == "replace" else images_per_place
        self.places = np.flatnonzero(counts >= least)
        self.skipped = int(len(self.members) - len(self.places))
        self.p, self.k, self.seed, self.short = places_per_batch, images_per_place, seed, short
        self.coords = None if place_coords is None else np.asarray(place_coords, np.float64).reshape(len(counts), -1)
        self.exclusion, self.rank, self.world_size = float(exclusion), rank, world_size
        if len(self.places) < places_per_batch * world_size:
            raise ValueError(f"{len(self.places)} usable places (of {len(counts)}; {self.skipped} have fewer than "
                             f"{least} images) cannot fill one batch of {places_per_batch} places on each of "
                             f"{world_size} processes; lower --places-per-batch")

    def __len__(self) -> int:
        """Batches per epoch on this rank (an upper bound when `exclusion` defers places)."""
        return len(self.places) // (self.p * self.world_size)

    def _place_batches(self, rng: np.random.Generator) -> List[np.ndarray]:
        order = list(rng.permutation(self.places))
        batches: List[np.ndarray] = []
        while len(order) >= self.p:
            chosen: List[int] = []
            deferred: List[int] = []
            while order and len(chosen) < self.p:
                place = order.pop(0)
                near = self.coords is not None and self.exclusion > 0 and any(
                    np.linalg.norm(self.coords[place] - self.coords[c]) <= self.exclusion for c in chosen)
                (deferred if near else chosen).append(place)
            order = deferred + order
            if len(chosen) < self.p:
                break
            batches.append(np.array(chosen, dtype=np.int64))
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank:usable:self.world_size]

    def batches(self, epoch: int, generation: int = 0) -> List[np.ndarray]:
        """This rank's batches of (generation, epoch): the same for the same seed, whatever ran before."""
        rng = np.random.default_rng([self.seed, generation, epoch])
        out = []
        for places in self._place_batches(rng):
            picks = []
            for place in places:
                members = self.members[place]
                replace = len(members) < self.k
                picks.append(rng.choice(members, size=self.k, replace=replace))
            out.append(np.concatenate(picks))
        return out

    def labels_of(self, batch: np.ndarray) -> torch.Tensor:
        """Batch-local labels 0..P-1, K of each, in the batch's order."""
        return torch.arange(len(batch) // self.k).repeat_interleave(self.k)


def multi_similarity_loss(alpha: float = MS_ALPHA, beta: float = MS_BETA, base: float = MS_BASE,
                          epsilon: float = MS_EPSILON) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(descriptors, labels) -> the multi-similarity loss over the pairs pytorch-metric-learning's
    MultiSimilarityMiner keeps (cosine similarity; descriptors are L2-normalised by every registry model)."""
    try:
        from pytorch_metric_learning import losses, miners
    except ImportError:
        raise ImportError("the place-batch recipe's multi-similarity loss needs pytorch-metric-learning: "
                          "pip install 'clusvpr-zoo[train]'") from None
    loss_fn = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
    miner = miners.MultiSimilarityMiner(epsilon=epsilon)

    def loss(descriptors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(descriptors.device)
        return loss_fn(descriptors, labels, miner(descriptors, labels))

    return loss


def batch_similarity_kl(student: torch.Tensor, teacher: torch.Tensor, student_temperature: float,
                        teacher_temperature: float) -> torch.Tensor:
    """The place batch's soft loss: mean over the N images of KL(q_i || p_i), where q_i and p_i are the teacher's
    and the student's softmax over image i's similarities to the other N - 1 images of the batch (self excluded),
    at `teacher_temperature` and `student_temperature`. (N, D) descriptors each; the teacher gets no gradient."""
    if student.ndim != 2 or student.shape != teacher.shape or len(student) < 2:
        raise ValueError(f"expected student and teacher descriptors (N, D) of the same shape with N >= 2, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    n = len(student)
    others = ~torch.eye(n, dtype=torch.bool, device=student.device)

    def logits(d: torch.Tensor, temperature: float) -> torch.Tensor:
        return (d @ d.T / temperature).masked_select(others).view(n, n - 1)

    return soft_kl(logits(student, student_temperature), logits(teacher.detach(), teacher_temperature))


class Distillation:
    """What a generation with a teacher adds to a place batch: `teacher()` is the frozen teacher (None in a
    generation without one), `temperature(g)` the run's temperatures (g = 0: the student's), `weight` the soft loss's
    weight, `describe(model, inputs)` a model's L2-normalised descriptors of a batch."""

    def __init__(self, teacher: Callable[[], Optional[torch.nn.Module]], temperature: Callable[[int], float],
                 weight: float, describe: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> None:
        self.teacher, self.temperature, self.weight, self.describe = teacher, temperature, weight, describe

    def target(self, inputs: torch.Tensor) -> Optional[torch.Tensor]:
        """The teacher's descriptors of a batch (no gradient), or None in a generation without a teacher."""
        teacher = self.teacher()
        if teacher is None:
            return None
        with torch.no_grad():
            return self.describe(teacher, inputs)

    def soft(self, student: torch.Tensor, target: torch.Tensor, generation: int) -> torch.Tensor:
        """`batch_similarity_kl` of the student's descriptors against the teacher's, in float32."""
        return batch_similarity_kl(student.float(), target.float(), self.temperature(0), self.temperature(generation))


class PlaceEpoch:
    """The place-batch recipe's part of an epoch (beside the tuple recipe's `TupleEpoch`): this rank's P x K batches
    of the epoch, each one optimiser step on the multi-similarity loss of its descriptors, plus the weighted soft
    loss against the teacher in a generation that has one (`distillation`). `describe(inputs, generation)` gives a
    batch's L2-normalised descriptors (through DistributedDataParallel when distributed)."""

    def __init__(self, *, model: Any, sampler: PlaceBatchSampler, source: Any, describe: Callable,
                 loss: Callable, seed: int, ctx: Any, autocast: Callable, progress: bool,
                 distillation: Optional[Distillation] = None) -> None:
        self.model, self.sampler, self.source, self.describe, self.loss = model, sampler, source, describe, loss
        self.seed, self.ctx, self.autocast, self.progress = seed, ctx, autocast, progress
        self.distillation = distillation

    def run(self, generation: int, epoch: int, optimizer: Any) -> Dict[str, float]:
        """Optimise over this epoch's batches; the mean loss (with a teacher also its parts: `hard`, the
        multi-similarity loss, and `soft`), averaged over ranks."""
        from tqdm.auto import tqdm

        from .loop import epoch_rng
        from .sources import stack_items

        epoch_rng(self.seed, generation, epoch, self.ctx.rank)  # this rank's torch stream (dropout)
        self.model.train()
        logs: List[Dict[str, float]] = []
        batches = self.sampler.batches(epoch, generation)
        with tqdm(total=len(batches), desc=f"gen {generation} epoch {epoch}", unit="batch",
                  disable=not self.progress) as bar:
            for batch in batches:
                inputs = stack_items(self.source, batch.tolist(), train=True).to(self.ctx.device, non_blocking=True)
                logs.append(self.step(inputs, self.sampler.labels_of(batch), generation, epoch, optimizer))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean([r['loss'] for r in logs]):.4f}")
        keys = logs[0] if logs else ("loss",)  # no batch (every place deferred): a NaN loss, as np.mean([]) gives
        return {k: self.ctx.all_reduce_mean(float(np.mean([r[k] for r in logs])) if logs else float("nan"))
                for k in keys}

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, generation: int, epoch: int,
             optimizer: Any) -> Dict[str, float]:
        """One optimiser step on a batch: its loss, and with a teacher the loss's parts."""
        optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            descriptors = self.describe(inputs, generation).float()
            loss = hard = self.loss(descriptors, labels)
            target = self.distillation.target(inputs) if self.distillation is not None else None
        soft = None if target is None else self.distillation.soft(descriptors, target, generation)
        if soft is not None:
            loss = hard + self.distillation.weight * soft
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)} at generation {generation}, epoch {epoch}: "
                                     "lower --lr (or check the data); the last checkpoint is kept")
        loss.backward()
        optimizer.step()
        if soft is None:
            return {"loss": float(loss.detach())}
        return {"loss": float(loss.detach()), "hard": float(hard.detach()), "soft": float(soft.detach())}
