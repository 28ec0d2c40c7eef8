"""The generic trainer on tiny generated data: learning, the Hub layout, best-model selection, refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_vpr import small_config

import registry
from registry.training import ClustersNotInitialisedError, Trainer, get_recipe
from registry.training.checkpoint import load_checkpoint
from registry.training.sources import stack_items


def _fixed_tuple_loss(trainer: Trainer) -> float:
    """Loss of one fixed tuple per query (positive: same place; negatives: 4 and 8 places on)."""
    nd = trainer.train_set.num_db
    items = [[nd + q, q, (q + 4) % nd, (q + 8) % nd] for q in range(nd)]
    inputs = torch.stack([stack_items(trainer.source, t, train=False) for t in items])
    cfg = small_config(neg_num=2, temperatures=(0.02,))
    with torch.no_grad():
        return get_recipe("global").loss(trainer.model, None, trainer.source, inputs, cfg, 0)[0].item()


def test_a_few_epochs_lower_the_loss_and_raise_recall(tiny_sets, tmp_path):
    train, _ = tiny_sets
    model = registry.create("tiny_gem", train_layers="all")
    trainer = Trainer(model, train, tmp_path / "run", small_config(epochs=4, temperatures=(0.02,)), val_set=train,
                      progress=False)
    loss0, recall0 = _fixed_tuple_loss(trainer), trainer.validate()["R@1"]
    summary = trainer.fit()
    loss1, recall1 = _fixed_tuple_loss(trainer), summary["best"]["recalls"]["R@1"]
    assert loss1 < loss0 - 0.03
    assert recall1 >= recall0 + 25.0
    assert len(summary["history"]) == 5


def test_the_output_folder_is_a_hub_layout_that_loads(tiny_sets, tmp_path):
    train, val = tiny_sets
    out = tmp_path / "run"
    trainer = Trainer(registry.create("tiny_netvlad"), train, out, small_config(), val_set=val, progress=False)
    alpha = trainer.init_clusters()
    assert alpha > 0 and (out / "centroids.h5").is_file()
    summary = trainer.fit()
    layout = {"config.json", "model.safetensors", "centroids.h5", "pca.h5", "README.md"}
    assert layout <= {p.name for p in out.iterdir()}
    loaded = registry.create("tiny_netvlad", pretrained=str(out))
    assert loaded.whitening.fitted and loaded.descriptor_dim == 8
    x = torch.randn(3, 3, 32, 48)
    trainer.model.eval()
    torch.testing.assert_close(loaded(x), trainer.model(x))
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["datasets"] == ["train"] and config["training"]["recipe"] == "global"
    assert config["recalls"]["val"] == pytest.approx(summary["final_val"])
    log = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]  # epoch 0: the model before training
    assert all("val_R@5" in r for r in log) and all("loss" in r for r in log[1:])


def test_the_best_validation_epoch_is_the_saved_model(tiny_sets, tmp_path):
    train, val = tiny_sets
    out = tmp_path / "run"
    trainer = Trainer(registry.create("tiny_gem", train_layers="all"), train, out,
                      small_config(epochs=4, lr=3e-3), val_set=val, progress=False)
    summary = trainer.fit()
    scores = [r["val_R@5"] for r in summary["history"]]
    assert summary["best"]["epoch"] == summary["history"][int(np.argmax(scores))]["epoch"]  # the first of the highest
    best = load_checkpoint(out / "train" / "best.pt")["model"]
    saved = load_file(str(out / "model.safetensors"))
    for k, v in best.items():
        torch.testing.assert_close(saved[k], v)


def test_training_without_cluster_initialisation_is_refused(tiny_sets, tmp_path):
    train, val = tiny_sets
    trainer = Trainer(registry.create("tiny_clusvpr"), train, tmp_path / "run", small_config(), val_set=val,
                      progress=False)
    with pytest.raises(ClustersNotInitialisedError, match="clusters are not initialised.*init_clusters"):
        trainer.fit()
    Trainer(registry.create("tiny_gem"), train, tmp_path / "gem", small_config(epochs=1), progress=False).fit()


def test_a_whitening_larger_than_the_training_set_fails_before_training(tiny_sets, tmp_path):
    train, _ = tiny_sets
    with pytest.raises(ValueError, match="whitening_dim"):
        Trainer(registry.create("tiny_netvlad", whitening_dim=32), train, tmp_path / "run", small_config())


def test_generations_need_a_recipe_with_a_teacher(tiny_sets, tmp_path):
    train, _ = tiny_sets
    with pytest.raises(ValueError, match="generations"):
        Trainer(registry.create("tiny_gem"), train, tmp_path / "run", small_config(generations=2))


def test_autocast_training_runs_where_cuda_is_absent(tiny_sets, tmp_path):
    train, val = tiny_sets
    trainer = Trainer(registry.create("tiny_gem"), train, tmp_path / "run", small_config(epochs=1, amp=True),
                      val_set=val, progress=False)
    summary = trainer.fit()
    assert trainer.amp and np.isfinite(summary["history"][-1]["loss"])


def test_shutdown_releases_the_ddp_wrapper_before_leaving_the_group(tiny_sets, tmp_path):
    """A DDP module alive after destroy_process_group is freed at interpreter exit, where gloo aborts (SIGABRT)."""
    import weakref

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from registry.training import DistContext, shutdown

    train, _ = tiny_sets
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        # world_size=2 makes the Trainer wrap its step in DDP; the one-process group is enough to build it
        ctx = DistContext(rank=0, world_size=2)
        trainer = Trainer(registry.create("tiny_gem"), train, tmp_path / "run", small_config(epochs=1), ctx=ctx,
                          progress=False)
        assert isinstance(trainer.engine, DistributedDataParallel)
        wrapper = weakref.ref(trainer.engine)
        shutdown(ctx, trainer)
        assert wrapper() is None and trainer.engine is trainer.step
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_the_whitening_size_is_chosen_on_validation(tiny_sets, tmp_path):
    train, val = tiny_sets
    out = tmp_path / "run"
    cfg = small_config(epochs=1, whitening_dims=(8, 2, None))
    trainer = Trainer(registry.create("tiny_netvlad"), train, out, cfg, val_set=val, progress=False)
    trainer.init_clusters()
    summary = trainer.fit()
    selection = summary["whitening_selection"]
    rows = {r["dim"]: r for r in selection["candidates"]}
    assert list(rows) == [8, 2, None] and selection["by"] == "R@5"
    scores = [rows[d]["R@5"] for d in (8, 2, None)]
    assert rows[selection["chosen"]]["R@5"] == max(scores)
    assert selection["chosen"] == (8, 2, None)[scores.index(max(scores))]  # ties: the first listed
    chosen_row = {k: rows[selection["chosen"]][k] for k in ("R@1", "R@5", "R@10")}
    assert chosen_row == pytest.approx(summary["final_val"])
    # and it is what validation through the model's installed whitening (a separate path) measures
    assert chosen_row == pytest.approx(trainer.validate(whiten=True))
    chosen_dim = selection["chosen"] or trainer.model.aggregator.out_dim
    loaded = registry.create("tiny_netvlad", pretrained=str(out))
    assert loaded.descriptor_dim == trainer.model.descriptor_dim == chosen_dim
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["whitening_selection"]["chosen"] == selection["chosen"]
    # the no-whitening row equals validation without the whitening layer
    plain = trainer.validate(whiten=False)
    assert {k: rows[None][k] for k in plain} == pytest.approx(plain)


def test_whitening_selection_needs_a_whitening_and_a_validation_set(tiny_sets, tmp_path):
    train, val = tiny_sets
    with pytest.raises(ValueError, match="has no whitening"):
        Trainer(registry.create("tiny_gem"), train, tmp_path / "a", small_config(whitening_dims=(4,)), val_set=val)
    with pytest.raises(ValueError, match="validation set"):
        Trainer(registry.create("tiny_netvlad"), train, tmp_path / "b", small_config(whitening_dims=(4,)))
    with pytest.raises(ValueError, match="exceed the model's whitening_dim 8"):
        Trainer(registry.create("tiny_netvlad"), train, tmp_path / "c", small_config(whitening_dims=(16, 4)),
                val_set=val)
    with pytest.raises(ValueError, match="whitening_dims lists"):
        small_config(whitening_dims=(0,))


@pytest.mark.parametrize("mult", [1.0, 10.0])
def test_the_aggregator_learns_at_its_own_rate(tiny_sets, tmp_path, mult):
    train, _ = tiny_sets
    model = registry.create("tiny_netvlad", train_layers="all")
    trainer = Trainer(model, train, tmp_path / "run", small_config(lr=1e-3, aggregator_lr_mult=mult), progress=False)
    trainer.optim.renew()
    assert len(trainer.optimizer.param_groups) == (1 if mult == 1.0 else 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    trainer.optimizer.step()  # Adam's first step moves every weight by its group's lr (unit gradients)
    for name, p in model.named_parameters():
        if name in before:
            expected = 1e-3 * (mult if name.startswith("aggregator.") else 1.0)
            torch.testing.assert_close((before[name] - p.detach()).abs().max().item(), expected, rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="aggregator_lr_mult must be > 0"):
        small_config(aggregator_lr_mult=0)


def test_epochs_and_the_whitening_choice_are_logged_not_printed(tiny_sets, tmp_path, caplog, capsys):
    train, val = tiny_sets
    trainer = Trainer(registry.create("tiny_netvlad"), train, tmp_path / "run",
                      small_config(epochs=1, whitening_dims=(8, None)), val_set=val, progress=False)
    trainer.init_clusters()
    with caplog.at_level("INFO", logger="registry.training"):
        trainer.fit()
    messages = [r.getMessage() for r in caplog.records if r.name == "registry.training.trainer"]
    assert any(m.startswith("generation=0 epoch=1 ") and "val_R@5=" in m for m in messages)
    assert any(m.startswith(f"whitening chosen on {val.name} by R@5: ") for m in messages)
    assert capsys.readouterr().out == ""
