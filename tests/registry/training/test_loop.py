"""registry.training.loop: the epoch's random streams, each rank's share, one epoch, the end-of-epoch bookkeeping."""
from __future__ import annotations

import math

import pytest
import torch
from tiny_vpr import small_config

import registry
from registry.training import Trainer
from registry.training.checkpoint import load_checkpoint
from registry.training.loop import epoch_rng, rank_share


def test_the_mining_stream_is_the_same_on_every_rank_and_torchs_differs_per_rank():
    draws = {}
    for rank in (0, 1):
        mining = epoch_rng(7, 1, 2, rank).permutation(50)
        draws[rank] = (mining.tolist(), torch.rand(3))
    assert draws[0][0] == draws[1][0] and not torch.equal(draws[0][1], draws[1][1])
    again = epoch_rng(7, 1, 2, 1).permutation(50).tolist(), torch.rand(3)
    assert again[0] == draws[1][0] and torch.equal(again[1], draws[1][1])  # a resumed epoch draws the same
    assert epoch_rng(7, 1, 3, 0).permutation(50).tolist() != draws[0][0]  # the next epoch does not


@pytest.mark.parametrize("n, world", [(7, 1), (7, 2), (8, 4), (5, 3), (2, 4)])
def test_every_rank_gets_the_same_count_and_together_they_cover_every_item(n, world):
    items = list(range(n))
    shares = [rank_share(items, rank, world) for rank in range(world)]
    assert {len(s) for s in shares} == {math.ceil(n / world)}
    assert set().union(*shares) == set(items)
    # round robin: item i goes to rank i % world; the short ranks wrap round to the start
    for rank, share in enumerate(shares):
        assert share == [items[(rank + world * i) % n] for i in range(len(share))]
        assert share[: len(items[rank::world])] == items[rank::world]


def _trainer(tiny_sets, tmp_path, val=False, **changes):
    train, val_set = tiny_sets
    trainer = Trainer(registry.create("tiny_gem"), train, tmp_path / "run", small_config(**changes),
                      val_set=val_set if val else None, progress=False)
    trainer.folder.prepare()
    trainer.loop.start_generation()
    trainer.optimizer.step()  # no gradients yet: moves nothing, but the schedule may step after it
    return trainer


def test_the_end_of_an_epoch_keeps_the_best_and_commits_it(tiny_sets, tmp_path):
    trainer = _trainer(tiny_sets, tmp_path)
    trainer.loop.record_start()  # no validation set: nothing to record, but a checkpoint to resume from
    assert trainer.history == [] and load_checkpoint(trainer.train_dir / "checkpoint.pt")["epoch"] == 0
    lr = trainer.optimizer.param_groups[0]["lr"]
    first = trainer.loop.end_epoch({"loss": 0.5}, 1.26)
    assert first == {"generation": 0, "epoch": 1, "lr": lr, "loss": 0.5, "seconds": 1.3, "best": True}
    assert trainer.best == {"score": -0.5, "generation": 0, "epoch": 1, "recalls": {}}  # no validation: -loss
    best_before = trainer.best_model
    with torch.no_grad():
        next(p for p in trainer.model.parameters() if p.requires_grad).add_(1.0)
    assert not trainer.loop.end_epoch({"loss": 0.7}, 1.0)["best"]
    assert trainer.best_model is best_before and trainer.epoch == 2
    saved = load_checkpoint(trainer.train_dir / "checkpoint.pt")
    assert saved["epoch"] == 2 and saved["history"] == trainer.history
    assert load_checkpoint(trainer.train_dir / "best.pt")["epoch"] == 1


def test_validation_decides_the_best_epoch_from_epoch_zero(tiny_sets, tmp_path):
    trainer = _trainer(tiny_sets, tmp_path, val=True)
    trainer.loop.record_start()
    start = trainer.validate()
    assert trainer.history == [{"generation": 0, "epoch": 0, **{f"val_{k}": v for k, v in start.items()},
                                "best": True}]
    record = trainer.loop.end_epoch({"loss": 0.1}, 1.0)  # the weights did not change: a tie, epoch 0 stays best
    assert record["val_R@5"] == start["R@5"] and not record["best"] and trainer.best["epoch"] == 0


def test_an_epoch_trains_every_chosen_query_and_returns_mean_losses(tiny_sets, tmp_path):
    trainer = _trainer(tiny_sets, tmp_path, queries_per_epoch=6)
    seen = []
    engine = trainer.engine
    trainer.engine = lambda inputs, generation: (seen.append(len(inputs)), engine(inputs, generation))[1]
    before = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
    losses = trainer.train_epoch()
    assert sum(seen) == 6 and set(losses) >= {"loss"} and math.isfinite(losses["loss"])
    after = [p.detach() for p in trainer.model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_a_loss_that_is_not_finite_stops_the_epoch_with_the_fix(tiny_sets, tmp_path):
    trainer = _trainer(tiny_sets, tmp_path)
    trainer.engine = lambda inputs, generation: (torch.tensor(float("nan")), {})
    with pytest.raises(FloatingPointError, match="loss became nan at generation 0, epoch 0: lower --lr"):
        trainer.train_epoch()


class _LossesEpoch:
    """The recipe's epoch replaced by a fixed sequence of mean losses (no validation set: the score is -loss)."""

    def __init__(self, losses):
        self.losses, self.calls = list(losses), []

    def run(self, generation, epoch, optimizer):
        self.calls.append((generation, epoch))
        return {"loss": self.losses[len(self.calls) - 1]}


def test_patience_ends_a_generation_after_that_many_epochs_without_a_better_score(tiny_sets, tmp_path):
    trainer = _trainer(tiny_sets, tmp_path, epochs=10, patience=2)
    trainer.loop.epoch = fake = _LossesEpoch([0.5, 0.4, 0.6, 0.7, 0.1, 0.1])
    records = []
    trainer.loop.run(records.append)
    # epoch 2 is the best; epochs 3 and 4 do not beat it: the generation ends after epoch 4 of the 10 allowed
    assert fake.calls == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert [r["best"] for r in records] == [True, True, False, False] and trainer.best["epoch"] == 2


def test_patience_counts_per_generation_and_from_the_history_a_resumed_run_reads(tiny_sets, tmp_path):
    from registry.training.loop import stale_epochs

    history = [{"generation": 0, "epoch": 0, "best": True}, {"generation": 0, "epoch": 1, "best": False},
               {"generation": 0, "epoch": 2, "best": False}, {"generation": 1, "epoch": 1, "best": False}]
    assert stale_epochs(history, 1) == 1 and stale_epochs(history[:3], 0) == 2 and stale_epochs(history[:1], 0) == 0
    trainer = _trainer(tiny_sets, tmp_path, epochs=10, patience=2)
    trainer.loop.epoch = fake = _LossesEpoch([0.5, 0.6, 0.7])
    trainer.loop.run(lambda record: None)
    assert fake.calls == [(0, 0), (0, 1), (0, 2)] and trainer.loop.state.generation == 1  # the only one is over
    trainer.loop.run(lambda record: None)  # run again (as a resumed run would): nothing is left to train
    assert len(fake.calls) == 3


def test_patience_must_be_a_positive_number_of_epochs():
    from registry.training.config import TrainConfig

    with pytest.raises(ValueError, match="patience must be >= 1"):
        TrainConfig(patience=0).validate()
