"""The place-batch sampler (P places x K images, seeded per epoch, DDP shares, exclusion of nearby places) and the
multi-similarity loss against a float64 implementation of Wang et al.'s formula with its miner."""
import numpy as np
import pytest
import torch
from tiny_vpr import Killed, kill_after

from registry.training.place_batch import PlaceBatchSampler, multi_similarity_loss


def _labels(counts):
    return np.concatenate([np.full(c, p) for p, c in enumerate(counts)])


def test_batches_hold_p_places_of_k_images_each():
    labels = _labels([4] * 20)
    s = PlaceBatchSampler(labels, places_per_batch=4, images_per_place=3, seed=1)
    batches = s.batches(0)
    assert len(batches) == len(s) == 5
    seen = set()
    for b in batches:
        assert b.shape == (12,)
        places = labels[b].reshape(4, 3)
        assert (places == places[:, :1]).all()  # place-major, K of each
        assert len(set(places[:, 0])) == 4
        assert all(len(set(row)) == 3 for row in b.reshape(4, 3))  # no repeats when a place has >= K images
        seen.update(places[:, 0])
    assert seen == set(range(20))  # every place once per epoch
    assert s.labels_of(batches[0]).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_same_seed_and_epoch_same_batches_other_epoch_differs():
    labels = _labels([5] * 30)
    a = PlaceBatchSampler(labels, 5, 2, seed=3).batches(2)
    b = PlaceBatchSampler(labels, 5, 2, seed=3).batches(2)
    c = PlaceBatchSampler(labels, 5, 2, seed=3).batches(3)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))


def test_short_places_replaced_or_skipped_and_singletons_always_skipped():
    labels = _labels([1, 2, 2, 4, 4, 4, 4, 4])
    rep = PlaceBatchSampler(labels, 2, 3, short="replace")
    assert rep.skipped == 1 and 0 not in rep.places
    drawn = np.concatenate(rep.batches(0))
    assert 0 not in labels[drawn]
    skip = PlaceBatchSampler(labels, 2, 3, short="skip")
    assert skip.skipped == 3 and set(skip.places) == {3, 4, 5, 6, 7}
    with pytest.raises(ValueError, match="lower --places-per-batch"):
        PlaceBatchSampler(labels, 6, 3, short="skip")


def test_ranks_take_disjoint_shares_of_the_places():
    labels = _labels([3] * 24)
    shares = [PlaceBatchSampler(labels, 3, 2, seed=0, rank=r, world_size=2).batches(0) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 4
    places = [set(labels[np.concatenate(s)]) for s in shares]
    assert not places[0] & places[1]


def test_nearby_places_never_share_a_batch():
    labels = _labels([2] * 40)
    coords = np.arange(40, dtype=float)[:, None]  # an aligned route: neighbours within 1 place look alike
    s = PlaceBatchSampler(labels, 8, 2, seed=5, place_coords=coords, exclusion=1.0)
    for epoch in range(5):
        for b in s.batches(epoch):
            places = np.sort(np.unique(labels[b]))
            assert len(places) == 8 and np.diff(places).min() >= 2


def _ms_reference(x, y, alpha=1.0, beta=50.0, base=0.0, eps=0.1):
    s = (x @ x.T).double().numpy()
    y = y.numpy()
    per_anchor = []
    for i in range(len(y)):
        pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [j for j in range(len(y)) if y[j] != y[i]]
        pos_kept = [j for j in pos if s[i, j] - eps < s[i, neg].max()]
        neg_kept = [j for j in neg if s[i, j] + eps > s[i, pos].min()]
        lp = np.log1p(np.exp(-alpha * (s[i, pos_kept] - base)).sum()) / alpha if pos_kept else 0.0
        ln = np.log1p(np.exp(beta * (s[i, neg_kept] - base)).sum()) / beta if neg_kept else 0.0
        per_anchor.append(lp + ln)
    return float(np.mean(per_anchor))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_similarity_loss_matches_the_formula(seed):
    pytest.importorskip("pytorch_metric_learning")
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(4).repeat_interleave(4)
    got = multi_similarity_loss()(x, y).item()
    assert got == pytest.approx(_ms_reference(x, y), rel=1e-9)
    assert got > 0


def test_multi_similarity_loss_falls_when_places_separate():
    pytest.importorskip("pytorch_metric_learning")
    y = torch.arange(4).repeat_interleave(2)
    centres = torch.eye(4, 8, dtype=torch.float64)
    noise = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tight = torch.nn.functional.normalize(centres[y] + 0.05 * noise, dim=1)
    loose = torch.nn.functional.normalize(centres[y] + 2.0 * noise, dim=1)
    loss = multi_similarity_loss()
    assert loss(tight, y).item() < loss(loose, y).item()


def _place_trainer(sets, out, callbacks=(), epochs=3):
    from tiny_vpr import small_config

    import registry
    from registry.training import Trainer

    torch.manual_seed(0)
    cfg = small_config(epochs=epochs, batching="places", loss="multi_similarity", places_per_batch=4,
                       images_per_place=2)
    return Trainer(registry.create("tiny_gem", train_layers="all"), sets[0], out, cfg, val_set=sets[0],
                   progress=False, callbacks=callbacks)


def test_place_batch_training_raises_recall_and_resumes_to_the_same_model(tiny_sets, tmp_path):
    pytest.importorskip("pytorch_metric_learning")
    whole = _place_trainer(tiny_sets, tmp_path / "whole")
    start = whole.validate()["R@1"]
    expected = whole.fit()
    assert [r["epoch"] for r in expected["history"]] == [0, 1, 2, 3]
    assert expected["best"]["recalls"]["R@1"] > start

    with pytest.raises(Killed):
        _place_trainer(tiny_sets, tmp_path / "killed", [kill_after(1)]).fit()
    resumed = _place_trainer(tiny_sets, tmp_path / "killed").fit(resume=True)
    for a, b in zip(expected["history"], resumed["history"]):
        assert a.get("loss", 0.0) == pytest.approx(b.get("loss", 0.0), rel=1e-5)
        assert a["val_R@5"] == b["val_R@5"]


def test_place_batch_options_are_checked(tiny_sets, tmp_path):
    import registry
    from registry.training import TrainConfig, Trainer

    with pytest.raises(ValueError, match="multi_similarity"):
        TrainConfig(batching="places")
    with pytest.raises(ValueError, match="--batching tuples trains with loss"):
        TrainConfig(loss="multi_similarity")
    with pytest.raises(ValueError, match="has no teacher, so generations > 1"):
        Trainer(registry.create("tiny_gem"), tiny_sets[0], tmp_path / "x",
                TrainConfig(batching="places", loss="multi_similarity", generations=2, recipe="global"),
                progress=False)
