"""registry.training.checkpoint: a real write failure (the file-size limit, in the kernel) keeps the last good
checkpoint and says how to continue."""
from __future__ import annotations

import pytest
import torch
from real_faults import write_under_limit

from registry.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_a_checkpoint_write_past_the_file_size_limit_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.arange(10.0)})
    earlier = path.read_bytes()
    result = write_under_limit("""
        import torch
        from registry.training.checkpoint import save_checkpoint
    """, f"save_checkpoint({str(path)!r}, {{'epoch': 2, 'weights': torch.randn(100_000)}})", limit=64 * 1024)
    assert result["raised"] == "CheckpointError"
    assert result["message"].startswith(
        f"could not write checkpoint {path}: torch's writer stopped short: a quota or the file-size limit (ulimit -f) "
        "was reached, or the disk is full (RuntimeError: ")
    assert "the last good checkpoint.pt is kept unchanged" in result["message"]
    assert result["message"].endswith("continue the run with the same command plus --resume")
    assert path.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_a_first_checkpoint_that_cannot_be_written_leaves_no_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    result = write_under_limit("""
        import torch
        from registry.training.checkpoint import save_checkpoint
    """, f"save_checkpoint({str(path)!r}, {{'epoch': 1, 'weights': torch.randn(100_000)}})", limit=64 * 1024)
    assert result["raised"] == "CheckpointError" and "no earlier checkpoint.pt exists" in result["message"]
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_holding_nan_is_refused_naming_the_tensor(tmp_path):
    weights = torch.arange(10.0)
    weights[4] = float("inf")
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 3, "model": {"aggregator.centroids": weights},
                                                 "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}})
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path / 'checkpoint.pt'} holds NaN or Inf values in "
                                              r"1 tensor\(s\): model/aggregator.centroids: it is damaged"):
        load_checkpoint(tmp_path / "checkpoint.pt")
