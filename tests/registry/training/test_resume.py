"""Reliability: exact resume of a killed run, atomic checkpoints on a full disk, loud failure on corrupt images."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from tiny_vpr import Killed, assert_same_weights, kill_after, small_config

import registry
from registry.datasets import ImageReadError
from registry.training import CheckpointError, Trainer
from registry.training import checkpoint as checkpoint_module
from registry.training.checkpoint import load_checkpoint


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
    first = _trainer("tiny_clusvpr", tiny_sets, out, [kill_after(1, 3)], **options)
    first.init_clusters()
    with pytest.raises(Killed):  # killed in generation 0
        first.fit()
    with pytest.raises(Killed):  # killed in generation 1, with a teacher to restore
        _trainer("tiny_clusvpr", tiny_sets, out, [kill_after(3)], **options).fit(resume=True)
    resumed = _trainer("tiny_clusvpr", tiny_sets, out, **options).fit(resume=True)

    assert [(r["generation"], r["epoch"]) for r in resumed["history"]] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    assert len(expected["history"]) == 5
    for a, b in zip(expected["history"], resumed["history"]):
        assert a.get("loss", 0.0) == pytest.approx(b.get("loss", 0.0), rel=1e-5)
        assert a["val_R@5"] == b["val_R@5"]
    assert expected["best"] == resumed["best"]
    assert_same_weights(tmp_path / "whole", out)
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
    with pytest.raises(CheckpointError, match="disk is full.*last good checkpoint.pt is kept.*--resume"):
        trainer.fit()
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert load_checkpoint(out / "train" / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in (out / "train").iterdir()) == ["best.pt", "checkpoint.pt", "log.jsonl"]


def test_a_corrupt_image_fails_loudly_and_keeps_the_checkpoint(tiny_sets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _trainer("tiny_gem", tiny_sets, out, [kill_after(1)]).fit()
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
        _trainer("tiny_gem", tiny_sets, out, [kill_after(1)]).fit()
    with pytest.raises(CheckpointError, match="lr=0.001 .now 0.01"):
        _trainer("tiny_gem", tiny_sets, out, lr=1e-2).fit(resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer("tiny_gem", tiny_sets, out).fit()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _trainer("tiny_gem", tiny_sets, tmp_path / "empty").fit(resume=True)


def test_a_checkpoint_older_than_an_option_resumes_with_that_options_default(tiny_sets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _trainer("tiny_gem", tiny_sets, out, [kill_after(1)], epochs=2).fit()
    path = out / "train" / "checkpoint.pt"
    state = checkpoint_module.load_checkpoint(path)
    for newer in ("aggregator_lr_mult", "cluster_seed"):  # written before these options existed
        del state["config"][newer]
    checkpoint_module.save_checkpoint(path, state)
    assert _trainer("tiny_gem", tiny_sets, out, epochs=2).fit(resume=True)["history"][-1]["epoch"] == 2
    checkpoint_module.save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="aggregator_lr_mult=1.0 .now 2.0"):  # a non-default value differs
        _trainer("tiny_gem", tiny_sets, out, epochs=2, aggregator_lr_mult=2.0).fit(resume=True)


class _KillAtWrite:
    """Fault injection: every file write of the trainer ends in os.replace (atomic writes), so each call is a write
    boundary. Counts them; at call number `at` it leaves the temporary file or staging folder behind, as a SIGKILL
    would, and raises Killed instead of renaming it into place."""

    def __init__(self, root: Path, at: int = -1) -> None:
        self.root, self.at, self.calls, self._replace = root, at, [], os.replace

    def __call__(self, src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(self.root):
            self.calls.append(Path(dst).name)
            if len(self.calls) - 1 == self.at:
                temp = Path(src) if Path(src).name.endswith(".tmp") else Path(src).parent  # a file of a staging folder
                left = temp.with_name(temp.name[: -len("abcd1234.tmp")] + "killed00.tmp")  # as tempfile names them
                (shutil.copytree if temp.is_dir() else shutil.copyfile)(temp, left)
                raise Killed(f"killed before writing {dst}")
        return self._replace(src, dst, *args, **kwargs)


def _digests(out: Path):
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest()
            for n in ("model.safetensors", "centroids.h5", "pca.h5", "config.json")}


def _without_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


KILL_OPTIONS = dict(generations=2, epochs=1, pos_num=1, pos_pool=2)


def _train_killable(sets, out, monkeypatch, at=-1, resume=False):
    """One train.py-like run (k-means unless resuming, then fit) with a kill at write boundary `at`."""
    kill = _KillAtWrite(out, at)
    monkeypatch.setattr(os, "replace", kill)
    try:
        trainer = _trainer("tiny_clusvpr", sets, out, **KILL_OPTIONS)
        if not resume:
            trainer.init_clusters()
        return trainer.fit(resume=resume), kill.calls
    finally:
        monkeypatch.setattr(os, "replace", kill._replace)


def test_a_kill_at_every_write_boundary_resumes_to_a_bit_identical_run(tiny_sets, tmp_path, monkeypatch):
    expected, boundaries = _train_killable(tiny_sets, tmp_path / "whole", monkeypatch)
    assert boundaries.count("checkpoint.pt") == 3  # epoch 0, the one epoch of each generation
    for at, name in enumerate(boundaries):
        out = tmp_path / f"killed_{at}"
        with pytest.raises(Killed):
            _train_killable(tiny_sets, out, monkeypatch, at=at)
        assert list(out.rglob("*.killed00.tmp")) + list(tmp_path.glob(f".{out.name}.killed00.tmp")), name
        # as train.py: --resume once a checkpoint exists, else the same command again
        resumed, _ = _train_killable(tiny_sets, out, monkeypatch, resume=(out / "train" / "checkpoint.pt").is_file())
        assert _digests(out) == _digests(tmp_path / "whole"), f"killed before writing {name} (boundary {at})"
        assert _without_time(resumed["history"]) == _without_time(expected["history"])
        assert resumed["best"] == expected["best"]
        log = (out / "train" / "log.jsonl").read_text().splitlines()
        assert len(log) == len(expected["history"])
        assert not list(out.rglob("*.tmp")) and not list(tmp_path.glob(f".{out.name}.*")), "stale files stay"
    other = tmp_path / ".killed_0.v2.abcd1234.tmp"  # another run's (killed_0.v2) staging folder: not ours to remove
    other.mkdir()
    _train_killable(tiny_sets, tmp_path / "killed_0", monkeypatch, resume=True)
    assert other.is_dir()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_torchs_own_short_write_error_is_reported_as_a_full_disk(tiny_sets, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def disk_fills_after_epoch_one(trainer, record):  # torch really writes, to a device that is always full
        monkeypatch.setattr(checkpoint_module.torch, "save", lambda obj, path, *a, **k: real_save(obj, "/dev/full"))

    trainer = _trainer("tiny_gem", tiny_sets, out, [disk_fills_after_epoch_one], epochs=3)
    with pytest.raises(CheckpointError, match=r"disk is full \(RuntimeError: .*\).*last good checkpoint.pt is kept"
                                              r".*same command plus --resume") as caught:
        trainer.fit()
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's raw error, kept as the cause
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert load_checkpoint(out / "train" / "checkpoint.pt")["epoch"] == 1
    assert not list((out / "train").glob(".*"))
    assert [r["epoch"] for r in _trainer("tiny_gem", tiny_sets, out, epochs=3).fit(resume=True)["history"]] == [
        0, 1, 2, 3]
