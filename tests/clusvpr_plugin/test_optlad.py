"""OptLAD: the matrix-product form equals the materialised residual form; any map size; regions sum exactly."""
import pytest
import torch
import torch.nn.functional as F

from clusvpr_plugin.naive import naive_optlad_vlad
from clusvpr_plugin.optlad import OptLAD


def small_optlad(feature_size=(6, 8)):
    return OptLAD(in_channels=32, num_clusters=5, expansion=2, groups=4, feature_size=feature_size).double()


@pytest.mark.parametrize("size", [(6, 8), (5, 7), (2, 2), (9, 3)])
def test_matrix_form_equals_materialised_residuals(size):
    agg = small_optlad()
    with torch.no_grad():
        agg.p.uniform_(1.5, 4.0)
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    assert torch.allclose(agg.vlad(x), naive_optlad_vlad(agg, x), atol=1e-10)


def test_other_map_sizes_resample_the_exponent_map_bilinearly():
    agg = small_optlad((2, 2))
    with torch.no_grad():
        agg.p.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    p = agg.p_map(4, 4).detach().view(4, 4)
    assert p[0, 0] == 1.0 and p[-1, -1] == 4.0 and float(p[0, 1]) == pytest.approx(1.25)
    assert torch.equal(agg.p_map(2, 2), agg.p.data)


def test_grid_cells_sum_to_the_whole_map_vlad():
    agg = small_optlad()
    x = torch.randn(2, 32, 6, 8, dtype=torch.float64)
    cells = agg.patch_vlads(x, 3, 4)
    assert cells.shape == (2, 12, 5, 16)
    assert torch.allclose(cells.sum(1), agg.vlad(x), atol=1e-10)


def test_a_cell_uses_its_own_window_of_exponents():
    agg = small_optlad()
    with torch.no_grad():
        agg.p.uniform_(1.5, 4.0)
    x = torch.randn(1, 32, 6, 8, dtype=torch.float64)
    mask = torch.zeros(6, 8, dtype=torch.float64)
    mask[2:4, 2:4] = 1  # cell (1, 1) of a 3x4 grid over 6x8 = index 5
    # the cell equals the full-map computation restricted to the cell's locations
    y = agg._tokens(x)
    s, a = agg._assignment(y, agg.p_map(6, 8).double())
    A = s * a.unsqueeze(-1) * mask.flatten().view(1, -1, 1, 1)
    expected = torch.einsum("nlgk,nlgd->nkd", A, y) - agg.centroids * A.sum((1, 2)).unsqueeze(-1)
    assert torch.allclose(agg.patch_vlads(x, 3, 4)[:, 5], expected, atol=1e-10)


def test_descriptor_is_intra_and_l2_normalised():
    agg = small_optlad()
    out = agg(torch.randn(3, 32, 6, 8, dtype=torch.float64))
    assert out.shape == (3, 5 * 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3, dtype=torch.float64))
    per_cluster = out.view(3, 5, 16).norm(dim=2)
    assert torch.allclose(per_cluster, torch.full_like(per_cluster, 5 ** -0.5))


def test_local_descriptors_live_in_the_grouped_space():
    agg = small_optlad()
    assert agg.local_descriptors(torch.randn(2, 32, 6, 8, dtype=torch.float64)).shape == (2 * 4 * 48, 16)


@pytest.mark.parametrize("channels_last", [False, True])
def test_kmeans_descriptors_are_bit_identical_to_the_grouped_form_the_releases_were_initialised_from(channels_last):
    """k-means and forward share one layout (_tokens) now; the vectors k-means samples, and their order (image,
    group, location), are bit for bit those of the earlier (N, G, D, L) form, so cluster initialisation is unchanged."""
    from clusvpr_plugin.aggregator import ClusVPRAggregator

    torch.manual_seed(0)
    agg = ClusVPRAggregator(feature_size=(6, 8)).eval()
    for size in [(6, 8), (5, 7), (2, 2)]:
        x = torch.randn(2, 512, *size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            x = agg.refine(x)
            n, _, h, w = x.shape
            earlier = agg.optlad.linear(F.normalize(x, dim=1).flatten(2).transpose(1, 2))  # (N, L, E*C)
            earlier = earlier.view(n, h * w, agg.optlad.groups, -1).permute(0, 2, 3, 1)  # (N, G, D, L)
            expected = earlier.permute(0, 1, 3, 2).reshape(-1, agg.cluster_dim)
            assert torch.equal(agg.optlad.local_descriptors(x), expected)


def test_group_attention_is_the_attention_forward_weights_by():
    agg = small_optlad()
    with torch.no_grad():
        agg.p.uniform_(1.5, 4.0)
    x = torch.randn(2, 32, 6, 8, dtype=torch.float64)
    n, g, d = 2, agg.groups, agg.cluster_dim
    xg = torch.einsum("oc,nchw->nohw", agg.linear.weight, F.normalize(x, dim=1)).reshape(n, g, d, 48)
    p = agg.p_map(6, 8)
    expected = torch.sigmoid(xg.clamp(min=agg.eps).pow(p).mean(2).pow(1.0 / p)).mean(1).view(n, 6, 8)
    assert torch.allclose(agg.attention(x), expected, atol=1e-12)


def test_the_reference_form_aggregator_computes_the_same_descriptor():
    """The benchmark's reference-form yardstick is the same function as the aggregator (float64, odd map)."""
    from clusvpr_plugin.aggregator import ClusVPRAggregator
    from clusvpr_plugin.naive import reference_form_aggregator_vlad

    torch.manual_seed(0)
    agg = ClusVPRAggregator(feature_size=(7, 9)).eval().double()
    x = torch.randn(2, 512, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = agg.optlad.vlad(agg.refine(x)), reference_form_aggregator_vlad(agg, x)
    assert torch.allclose(ours, ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()))
