"""registry.training.state: a run's progress, the commit of an epoch and its views, resume checks, stale files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny_vpr import small_config
from torch import nn

from registry._util.atomic import atomic_path, staging_dir
from registry.training import CheckpointError
from registry.training.checkpoint import load_checkpoint
from registry.training.state import RunFolder, TrainState, check_options


def _checkpoint(state: TrainState, model: nn.Module, cfg) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    return state.to_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler,
                               prev_negatives=np.arange(6).reshape(2, 3), teacher=None, config=cfg)


def test_a_record_becomes_the_best_only_when_it_beats_it_and_keeps_a_cpu_copy():
    model, state = nn.Linear(3, 2), TrainState()
    assert state.best_weights(model) is not None and state.best == {"score": -math.inf}
    assert state.record({"epoch": 0}, 50.0, {"R@5": 50.0}, model)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    state.epoch = 1
    assert not state.record({"epoch": 1}, 50.0, {"R@5": 50.0}, model)  # a tie keeps the earlier epoch
    assert [r["best"] for r in state.history] == [True, False]
    assert state.best == {"score": 50.0, "generation": 0, "epoch": 0, "recalls": {"R@5": 50.0}}
    for k, v in state.best_weights(model).items():
        torch.testing.assert_close(v, kept[k])
        assert v.device.type == "cpu"


def test_a_commit_reads_back_as_the_same_state_with_its_views(tmp_path):
    model, cfg = nn.Linear(3, 2), small_config()
    state = TrainState(generation=1, epoch=2)
    state.record({"generation": 1, "epoch": 2, "val_R@5": 75.0}, 75.0, {"R@5": 75.0}, model)
    folder = RunFolder(tmp_path / "run")
    folder.prepare()
    folder.commit(_checkpoint(state, model, cfg), state)
    saved = folder.read(cfg)
    back = TrainState.from_checkpoint(saved)
    assert (back.generation, back.epoch, back.best, back.history) == (1, 2, state.best, state.history)
    assert saved["prev_negatives"].tolist() == [[0, 1, 2], [3, 4, 5]]
    log = (tmp_path / "run" / "train" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in log] == state.history
    best = load_checkpoint(tmp_path / "run" / "train" / "best.pt")
    assert best["epoch"] == 2 and torch.equal(best["model"]["weight"], model.weight.detach())


def test_a_checkpoint_without_best_weights_takes_them_from_best_pt(tmp_path):
    model, cfg = nn.Linear(3, 2), small_config()
    state = TrainState()
    state.record({"epoch": 0}, 1.0, {}, model)
    folder = RunFolder(tmp_path)
    folder.commit(_checkpoint(state, model, cfg), state)
    older = {**_checkpoint(state, model, cfg), "best_model": None}  # as a version before best_model was kept
    folder.commit(older, TrainState(), best_changed=False)
    assert torch.equal(folder.read(cfg)["best_model"]["weight"], model.weight.detach())


def test_resuming_needs_the_options_a_run_depends_on():
    cfg = small_config()
    check_options(cfg.to_dict(), cfg)
    older = {k: v for k, v in cfg.to_dict().items() if k != "aggregator_lr_mult"}  # predates the option: default
    check_options(older, cfg)
    with pytest.raises(CheckpointError, match=r"lr=0.001 \(now 0.01\).*original options"):
        check_options(cfg.to_dict(), small_config(lr=1e-2))
    check_options(cfg.to_dict(), small_config(eval_batch_size=7))  # not one a resumed run must keep


def test_stale_files_are_the_temporaries_of_this_run_only(tmp_path):
    out = tmp_path / "run"
    folder = RunFolder(out)
    folder.prepare()
    stale = []
    for target in (out / "train" / "checkpoint.pt", out / "centroids.h5"):
        with pytest.raises(KeyboardInterrupt):  # a write interrupted: atomic_path removes its own temporary file
            with atomic_path(target) as tmp:
                raise KeyboardInterrupt
        assert not tmp.exists()
        tmp.write_text("left by a kill")
        stale.append(tmp)
    stale.append(staging_dir(out))  # save_pretrained's staging folder
    other = staging_dir(tmp_path / "run.v2")  # another run's, beside ours
    kept = [out / "train" / "log.jsonl", out / "notes.tmp"]
    for path in kept:
        path.write_text("kept")
    assert sorted(folder.remove_stale_files()) == sorted(stale)
    assert not any(p.exists() for p in stale) and other.is_dir() and all(p.is_file() for p in kept)


def test_a_new_run_refuses_a_folder_with_a_checkpoint_and_drops_views_of_an_uncommitted_one(tmp_path):
    folder = RunFolder(tmp_path)
    folder.prepare()
    (tmp_path / "train" / "log.jsonl").write_text("{}\n")
    folder.refuse_restart()
    folder.prepare()
    assert list((tmp_path / "train").iterdir()) == []
    (tmp_path / "train" / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--resume"):
        folder.refuse_restart()
