"""Place batches with ClusVPR's pyramid generations: the soft loss against a float64 reference, a two-generation run
from the command line on cached frozen features, resume after kills between and within generations, and no tuple
miner built for place batches."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from tiny_vpr import Killed, assert_same_weights, kill_after, small_config

import registry
from registry.training import Trainer
from registry.training.place_batch import batch_similarity_kl


def _kl_reference(student: np.ndarray, teacher: np.ndarray, t_student: float, t_teacher: float) -> float:
    """Mean over images i of KL(q_i || p_i), q_i / p_i the teacher's / student's softmax over j != i, in float64
    loops."""
    n = len(student)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        q = np.array([np.exp(teacher[i] @ teacher[j] / t_teacher) for j in others])
        p = np.array([np.exp(student[i] @ student[j] / t_student) for j in others])
        q, p = q / q.sum(), p / p.sum()
        total += float(np.sum(q * np.log(q / p)))
    return total / n


@pytest.mark.parametrize("seed", [0, 1])
def test_the_soft_loss_is_the_kl_of_each_images_similarities_to_the_rest_of_the_batch(seed):
    g = torch.Generator().manual_seed(seed)
    student = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)  # P=3, K=2
    teacher = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    want = _kl_reference(student.numpy(), teacher.numpy(), 0.1, 0.07)
    assert batch_similarity_kl(student, teacher, 0.1, 0.07).item() == pytest.approx(want, rel=1e-12)
    assert batch_similarity_kl(student.float(), teacher.float(), 0.1, 0.07).item() == pytest.approx(want, rel=1e-5)
    # zero when the student's distributions are the teacher's; the teacher gets no gradient
    assert batch_similarity_kl(teacher, teacher, 0.07, 0.07).item() == pytest.approx(0.0, abs=1e-12)
    s, t = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
    batch_similarity_kl(s, t, 0.1, 0.07).backward()
    assert t.grad is None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda x: batch_similarity_kl(x, teacher, 0.1, 0.07), (student.clone()
                                                                                           .requires_grad_(True),))
    with pytest.raises(ValueError, match="same shape"):
        batch_similarity_kl(student, teacher[:4], 0.1, 0.07)


def _trainer(sets, out, callbacks=()):
    """tiny ClusVPR (the pyramid recipe), 2 generations of 2 epochs on place batches, on cached frozen features."""
    torch.manual_seed(0)
    cfg = small_config(generations=2, epochs=2, batching="places", loss="multi_similarity", places_per_batch=4,
                       images_per_place=2, temperatures=(0.1, 0.07))
    return Trainer(registry.create("tiny_clusvpr"), sets[0], out, cfg, val_set=sets[1], cache_features=True,
                   progress=False, callbacks=callbacks)


def test_place_generations_resume_to_the_uninterrupted_model(tiny_sets, tmp_path):
    pytest.importorskip("pytorch_metric_learning")
    whole = _trainer(tiny_sets, tmp_path / "whole")
    whole.init_clusters()
    expected = whole.fit()
    assert [(r["generation"], r["epoch"]) for r in expected["history"]] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    gen1 = [r for r in expected["history"] if r["generation"] == 1]
    assert all(r["soft"] > 0 and r["loss"] == pytest.approx(r["hard"] + 0.5 * r["soft"], rel=1e-3) for r in gen1)
    assert all("soft" not in r for r in expected["history"] if r["generation"] == 0)

    out = tmp_path / "killed"
    first = _trainer(tiny_sets, out, [kill_after(2)])
    first.init_clusters()
    with pytest.raises(Killed):  # killed between generations: the last epoch of generation 0 is committed
        first.fit()
    with pytest.raises(Killed):  # killed in generation 1, with a teacher to restore
        _trainer(tiny_sets, out, [kill_after(3)]).fit(resume=True)
    resumed = _trainer(tiny_sets, out).fit(resume=True)
    assert [(r["generation"], r["epoch"]) for r in resumed["history"]] == \
        [(r["generation"], r["epoch"]) for r in expected["history"]]
    for a, b in zip(expected["history"], resumed["history"]):
        for key in ("loss", "hard", "soft"):
            assert a.get(key, 0.0) == pytest.approx(b.get(key, 0.0), rel=1e-5)
        assert a["val_R@5"] == b["val_R@5"]
    assert expected["best"] == resumed["best"]
    assert_same_weights(tmp_path / "whole", out)


def test_place_batches_build_no_tuple_miner(tiny_sets, tmp_path, monkeypatch):
    pytest.importorskip("pytorch_metric_learning")
    from registry.training import mining

    def refuse(*args, **kwargs):
        raise AssertionError("the tuple miner was built for place batches")

    monkeypatch.setattr(mining.TupleMiner, "from_dataset", classmethod(refuse))
    monkeypatch.setattr(type(tiny_sets[0]), "non_negatives", refuse)
    torch.manual_seed(0)
    cfg = small_config(epochs=1, batching="places", loss="multi_similarity", places_per_batch=4, images_per_place=2)
    trainer = Trainer(registry.create("tiny_gem"), tiny_sets[0], tmp_path / "run", cfg, val_set=tiny_sets[1],
                      progress=False)
    assert trainer.miner is None
    summary = trainer.fit()
    assert [r["epoch"] for r in summary["history"]] == [0, 1]
    saved = torch.load(tmp_path / "run" / "train" / "checkpoint.pt", weights_only=True)
    assert saved["prev_negatives"].shape == (0, cfg.neg_num)


def _cli_args(roots, out, cache):
    """`vpr train` of tiny ClusVPR: 2 generations of 1 epoch on place batches of 4 x 2, on cached features."""
    return ["--plugin", "tiny_vpr", "--model", "tiny_clusvpr", "--train-set", f"aligned:{roots[0]}",
            "--val-set", f"aligned:{roots[1]}", "--batching", "places", "--loss", "multi_similarity",
            "--places-per-batch", "4", "--images-per-place", "2", "--generations", "2", "--epochs", "1",
            "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0", "--no-jitter", "--temperatures", "0.1",
            "0.07", "--cluster-descriptors", "400", "--cluster-per-image", "50", "--pca-images", "32",
            "--cache-features", str(cache), "--threads", "1", "--no-progress", "--output", str(out)]


def test_two_generations_of_place_batches_from_the_command_line_write_a_loadable_model(tiny_roots, tmp_path):
    pytest.importorskip("pytorch_metric_learning")
    from registry.cli import train as train_cli
    from registry.datasets import load_dataset
    from registry.evaluation.recall_table import recall_table

    out = tmp_path / "run"
    assert train_cli.main(_cli_args(tiny_roots, out, tmp_path / "cache")) == 0
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert [(r["generation"], r["epoch"]) for r in summary["history"]] == [(0, 0), (0, 1), (1, 1)]
    assert summary["history"][-1]["soft"] > 0
    model = registry.VPRModel.from_pretrained(str(out))
    assert json.loads((out / "config.json").read_text())["training"]["recipe"] == "pyramid"
    table = recall_table(model, [load_dataset(f"aligned:{tiny_roots[1]}")], progress=False)
    assert all(0 <= r["R@1"] <= 100 for r in table.values())


def test_two_gloo_processes_train_place_generations_each_on_its_share(tiny_roots, tmp_path):
    pytest.importorskip("pytorch_metric_learning")
    import subprocess
    import sys
    from pathlib import Path

    repo, here = Path(__file__).resolve().parents[3], Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(repo), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    out = tmp_path / "two"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "registry.cli", "train", *_cli_args(tiny_roots, out, tmp_path / "cache")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["world_size"] == 2
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert [(r["generation"], r["epoch"]) for r in summary["history"]] == [(0, 0), (0, 1), (1, 1)]
    assert summary["history"][-1]["soft"] > 0
    registry.VPRModel.from_pretrained(str(out))
