"""CWT: cluster weights against brute force, odd sizes, backward, optional knn-cuda agreement."""
import importlib.util

import numpy as np
import pytest
import torch

from clusvpr_plugin.aggregator import ClusVPRAggregator
from clusvpr_plugin.cwt import CWT, cluster_weights
from clusvpr_plugin.knn import knn_sq_dist_sum


def brute_force_weights(tokens: np.ndarray, k: int) -> np.ndarray:
    out = []
    for t in tokens:
        d2 = ((t[:, None, :] - t[None, :, :]) ** 2).sum(-1)
        d = np.sort(d2, axis=1)[:, : k + 1].sum(1)
        d_hat = (d - d.min()) / (d.max() - d.min())
        w = 1 - np.exp(-d_hat / k)
        w = w / w.sum()
        out.append((w - w.min()) / (w.max() - w.min()))
    return np.stack(out)


def test_cluster_weights_match_brute_force_float64():
    tokens = torch.randn(3, 40, 16, dtype=torch.float64)
    ours = cluster_weights(tokens, k=10).numpy()
    assert np.allclose(ours, brute_force_weights(tokens.numpy(), 10), atol=1e-6)


def test_isolated_token_gets_the_largest_weight():
    tokens = torch.randn(1, 30, 8) * 0.1
    tokens[0, 7] += 10.0
    w = cluster_weights(tokens, k=5)
    assert w[0].argmax() == 7 and w[0, 7] == 1.0


def test_knn_rejects_unknown_backends():
    with pytest.raises(ValueError, match="backend"):
        knn_sq_dist_sum(torch.randn(1, 5, 3), 2, backend="faiss")


def test_auto_runs_the_plain_torch_knn_even_where_knn_cuda_is_usable(monkeypatch):
    from clusvpr_plugin import knn

    def extension(tokens, k):
        raise AssertionError("knn_backend='auto' must not dispatch to knn-cuda")

    monkeypatch.setattr(knn, "_knn_cuda_available", lambda tokens: True)
    monkeypatch.setattr(knn, "knn_sq_dist_sum_cuda_ext", extension)
    tokens = torch.randn(2, 12, 8)
    assert torch.equal(knn_sq_dist_sum(tokens, 3, "auto"), knn.knn_sq_dist_sum_torch(tokens, 3))
    with pytest.raises(AssertionError, match="must not dispatch"):  # while 'knn_cuda' does
        knn_sq_dist_sum(tokens, 3, "knn_cuda")


@pytest.mark.skipif(not (torch.cuda.is_available() and importlib.util.find_spec("knn_cuda")),
                    reason="knn-cuda agreement needs CUDA and the optional knn-cuda package")
def test_knn_cuda_agrees_with_torch():
    tokens = torch.randn(4, 301, 256, device="cuda")
    assert torch.allclose(knn_sq_dist_sum(tokens, 10, "knn_cuda"), knn_sq_dist_sum(tokens, 10, "torch"), rtol=1e-4)


@pytest.mark.parametrize("size", [(5, 7), (3, 3), (2, 2), (4, 6)])
def test_cwt_keeps_any_map_size(size):
    cwt = CWT(dim=16, heads=2, mlp_dim=32).eval()
    g = torch.randn(2, 16, *size)
    assert cwt(g).shape == g.shape


def test_backward_works_in_train_mode_without_in_place_errors():
    agg = ClusVPRAggregator(in_channels=32, feature_size=(4, 6), num_clusters=4, groups=4, cwt_depth=2).train()
    x = torch.randn(2, 32, 5, 7, requires_grad=True)
    agg(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert agg.cwt[0].cwt.embed.weight.grad.abs().sum() > 0


def test_identity_init_starts_each_block_as_relu_of_batchnorm_and_still_learns():
    agg = ClusVPRAggregator(in_channels=32, feature_size=(4, 6), num_clusters=4, groups=4, cwt_depth=3,
                            cwt_init="identity").double().train()
    x = torch.randn(3, 32, 5, 7, dtype=torch.float64)
    expected = x
    for block in agg.cwt:  # by hand, in float64: ReLU(BN(half)) per half, batch statistics (train mode)
        halves = expected[:, :16], expected[:, 16:]
        expected = torch.cat([torch.relu((h - h.mean((0, 2, 3), keepdim=True))
                                         / torch.sqrt(h.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5))
                              for h in halves], 1)
    torch.testing.assert_close(agg.refine(x), expected, rtol=1e-9, atol=1e-9)
    agg(x).square().sum().backward()
    for block in agg.cwt:  # the zeroed weights still receive gradient, so training moves them
        for w in (block.local_dw_g.weight, block.global_dw_l.weight, block.cwt.pw.weight):
            assert w.grad.abs().sum() > 0
    default = ClusVPRAggregator(in_channels=32, feature_size=(4, 6), num_clusters=4, groups=4, cwt_depth=1)
    assert default.cwt[0].cwt.pw.weight.abs().sum() > 0  # the reference's random start is the default
    with pytest.raises(ValueError, match="cwt_init must be one of"):
        ClusVPRAggregator(in_channels=32, feature_size=(4, 6), num_clusters=4, groups=4, cwt_init="zeros")
