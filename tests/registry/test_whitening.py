"""PCA whitening against float64 numpy, HDF5 round trip, strict state-dict behaviour."""
import numpy as np
import pytest
import torch

from registry._util.h5io import load_centroids, save_centroids, write_datasets
from registry.whitening import PCAWhitening


def numpy_whiten(train, x, dim):
    mu = train.mean(0)
    cov = np.cov(train - mu, rowvar=False)
    lams, U = np.linalg.eigh(cov)
    lams, U = lams[::-1][:dim], U[:, ::-1][:, :dim]
    y = (x - mu) @ U / np.sqrt(lams)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


@pytest.mark.parametrize("n", [200, 20])  # primal (N >= D) and dual (N < D)
def test_fit_matches_numpy_up_to_component_signs(n):
    rng = np.random.default_rng(1)
    d = 32 if n > 32 else 40
    train = rng.normal(size=(n, d)) * np.linspace(3, 0.5, d)
    x = rng.normal(size=(5, d))
    w = PCAWhitening(d, 8).fit(torch.tensor(train))
    ours = w(torch.tensor(x, dtype=torch.float32)).numpy()
    ref = numpy_whiten(train, x, 8)
    signs = np.sign((ours * ref).sum(0))  # each component is defined up to a sign
    assert np.allclose(ours, ref * signs, atol=1e-4)


def test_truncation_equals_fitting_at_the_smaller_size_against_numpy():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(300, 24)) * np.linspace(4, 0.5, 24)
    x = rng.normal(size=(6, 24))
    full = PCAWhitening(24, 12).fit(torch.tensor(train))
    cut = full.truncated(5)
    assert (cut.in_dim, cut.out_dim, cut.fitted) == (24, 5, True)
    ours = cut(torch.tensor(x, dtype=torch.float32)).numpy()
    ref = numpy_whiten(train, x, 5)
    signs = np.sign((ours * ref).sum(0))
    assert np.allclose(ours, ref * signs, atol=1e-4)
    assert full.out_dim == 12  # the source is untouched
    for bad in (0, 13):
        with pytest.raises(ValueError, match="truncated to 1..12"):
            full.truncated(bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCAWhitening(24, 12).truncated(4)


def test_unfitted_whitening_passes_through_and_cannot_be_saved(tmp_path):
    w = PCAWhitening(6, 3)
    x = torch.randn(2, 6)
    assert torch.equal(w(x), x) and not w.fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        w.to_h5(tmp_path / "pca.h5")


def test_too_few_descriptors_is_a_clear_error():
    with pytest.raises(ValueError, match="needs more than 8 descriptors"):
        PCAWhitening(16, 8).fit(torch.randn(5, 16))


def test_h5_round_trip_in_the_reference_layout(tmp_path):
    w = PCAWhitening(10, 4).fit(torch.randn(50, 10))
    w.to_h5(tmp_path / "pca.h5")
    import h5py

    with h5py.File(tmp_path / "pca.h5") as f:
        assert set(f) == {"U", "lams", "mu", "Utmu"}
        assert np.allclose(f["Utmu"][...], f["U"][...].T @ f["mu"][...], atol=1e-5)
    back = PCAWhitening.from_h5(tmp_path / "pca.h5")
    x = torch.randn(3, 10)
    assert torch.allclose(back(x), w(x), atol=1e-6)


def test_h5_stored_out_by_in_is_transposed(tmp_path):
    w = PCAWhitening(10, 4).fit(torch.randn(50, 10))
    write_datasets(tmp_path / "p.h5", U=w.U.T.numpy(), lams=w.lams.numpy(), mu=w.mu.numpy(), Utmu=np.zeros(4))
    x = torch.randn(3, 10)
    assert torch.allclose(PCAWhitening.from_h5(tmp_path / "p.h5")(x), w(x), atol=1e-6)


def test_state_dict_moves_a_fit_into_a_fresh_layer_and_rejects_wrong_dims():
    w = PCAWhitening(10, 4).fit(torch.randn(50, 10))
    fresh = PCAWhitening(10, 4)
    fresh.load_state_dict(w.state_dict(), strict=True)
    assert fresh.fitted and torch.equal(fresh.U, w.U)
    with pytest.raises(ValueError, match="components"):
        PCAWhitening(10, 3).load_state_dict(w.state_dict())


def test_centroids_round_trip_and_missing_key_error(tmp_path):
    c, d = torch.randn(4, 3), torch.randn(9, 3)
    save_centroids(tmp_path / "c.h5", c, d)
    c2, d2 = load_centroids(tmp_path / "c.h5")
    assert torch.equal(c, c2) and torch.equal(d, d2)
    write_datasets(tmp_path / "bad.h5", centroids=c.numpy())
    with pytest.raises(KeyError, match="descriptors"):
        load_centroids(tmp_path / "bad.h5")
