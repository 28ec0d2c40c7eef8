"""Reliability: exact resume of a killed run, atomic checkpoints on a full disk, loud failure on corrupt images."""
from __future__ import annotations

import errno

import pytest
import torch
from safetensors.torch import load_file
from tiny_vpr import small_config

import registry
from registry.datasets import ImageReadError
from registry.training import CheckpointError, Trainer
from registry.training import checkpoint as checkpoint_module
from registry.training.checkpoint import load_checkpoint


class Killed(Exception):
    """Stands in for a SIGKILL right after a checkpoint was written."""


def _kill_after(*epochs):
    def callback(trainer, record):
        trained = sum("loss" in r for r in trainer.history)
        if trained in epochs:
            raise Killed(trained)
    return callback


def _trainer(name, sets, out, callbacks=(), **changes) -> Trainer:
    torch.manual_seed(0)  # the same initial weights for every run of a test
    train, val = sets
    return Trainer(registry.create(name), train, out, small_config(**changes), val_set=val, progress=False,
                   callbacks=callbacks)


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tiny_sets, tmp_path):
    options = dict(generations=2, epochs=2, pos_num=1, pos_pool=2)
    whole = _trainer("tiny_clusvpr", tiny_sets, tmp_path / "whole", **options)
    whole.init_clusters()
    expected = whole.fit()

    out = tmp_path / "killed"
    first = _trainer("tiny_clusvpr", tiny_sets, out, [_kill_after(1, 3)], **options)
    first.init_clusters()
    with pytest.raises(Killed):  # killed in generation 0
        first.fit()
    with pytest.raises(Killed):  # killed in generation 1, with a teacher to restore
        _trainer("tiny_clusvpr", tiny_sets, out, [_kill_after(3)], **options).fit(resume=True)
    resumed = _trainer("tiny_clusvpr", tiny_sets, out, **options).fit(resume=True)

    assert [(r["generation"], r["epoch"]) for r in resumed["history"]] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    assert len(expected["history"]) == 5
    for a, b in zip(expected["history"], resumed["history"]):
        assert a.get("loss", 0.0) == pytest.approx(b.get("loss", 0.0), rel=1e-5)
        assert a["val_R@5"] == b["val_R@5"]
    assert expected["best"] == resumed["best"]
    want, got = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert (out / "centroids.h5").is_file()


def test_a_full_disk_fails_loudly_and_keeps_the_last_good_checkpoint(tiny_sets, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def disk_fills_after_epoch_one(trainer, record):
        def full(obj, path, *args, **kwargs):
            with open(path, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(checkpoint_module.torch, "save", full)

    trainer = _trainer("tiny_gem", tiny_sets, out, [disk_fills_after_epoch_one], epochs=3)
    with pytest.raises(CheckpointError, match="disk is full.*intact.*--resume"):
        trainer.fit()
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert load_checkpoint(out / "train" / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in (out / "train").iterdir()) == ["best.pt", "checkpoint.pt", "log.jsonl"]


def test_a_corrupt_image_fails_loudly_and_keeps_the_checkpoint(tiny_sets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _trainer("tiny_gem", tiny_sets, out, [_kill_after(1)]).fit()
    bad = tiny_sets[0].db_images[3]
    original = bad.read_bytes()
    try:
        bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        with pytest.raises(ImageReadError, match=bad.name):
            _trainer("tiny_gem", tiny_sets, out).fit(resume=True)
    finally:
        bad.write_bytes(original)
    assert load_checkpoint(out / "train" / "checkpoint.pt")["epoch"] == 1


def test_resuming_with_other_options_or_restarting_a_run_is_refused(tiny_sets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _trainer("tiny_gem", tiny_sets, out, [_kill_after(1)]).fit()
    with pytest.raises(CheckpointError, match="lr=0.001 .now 0.01"):
        _trainer("tiny_gem", tiny_sets, out, lr=1e-2).fit(resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer("tiny_gem", tiny_sets, out).fit()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _trainer("tiny_gem", tiny_sets, tmp_path / "empty").fit(resume=True)


def test_a_checkpoint_older_than_an_option_resumes_with_that_options_default(tiny_sets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _trainer("tiny_gem", tiny_sets, out, [_kill_after(1)], epochs=2).fit()
    path = out / "train" / "checkpoint.pt"
    state = checkpoint_module.load_checkpoint(path)
    for newer in ("aggregator_lr_mult", "cluster_seed"):  # written before these options existed
        del state["config"][newer]
    checkpoint_module.save_checkpoint(path, state)
    assert _trainer("tiny_gem", tiny_sets, out, epochs=2).fit(resume=True)["history"][-1]["epoch"] == 2
    checkpoint_module.save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="aggregator_lr_mult=1.0 .now 2.0"):  # a non-default value differs
        _trainer("tiny_gem", tiny_sets, out, epochs=2, aggregator_lr_mult=2.0).fit(resume=True)
