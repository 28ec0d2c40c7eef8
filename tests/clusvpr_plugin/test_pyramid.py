"""The 21-region pyramid and ClusVPR's self-supervised loss (spec section 5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clusvpr_plugin import ClusVPRAggregator, OptLAD
from clusvpr_plugin.pyramid import (
    LARGE,
    MEDIUM,
    NUM_REGIONS,
    REGIONS,
    PyramidRecipe,
    hardest_regions,
    region_descriptors,
    region_logits,
)
from registry.training import TrainConfig
from registry.training.losses import sare_ind, soft_cross_entropy


def _aggregator(feature_size=(6, 8)) -> ClusVPRAggregator:
    return ClusVPRAggregator(32, feature_size=feature_size, num_clusters=4, cwt_depth=1, knn_k=4).eval()


class _CachedLike:
    """A source whose inputs already are conv5 maps (features = identity)."""

    def features(self, model, inputs):
        return inputs


class _Model(torch.nn.Module):
    def __init__(self, aggregator):
        super().__init__()
        self.aggregator = aggregator


def test_region_order_global_large_medium_small():
    assert NUM_REGIONS == 21
    assert REGIONS[0] == tuple(range(12))
    assert REGIONS[1:3] == LARGE and REGIONS[3:9] == MEDIUM
    assert REGIONS[9:] == tuple((i,) for i in range(12))
    assert MEDIUM[0] == (0, 1, 4, 5) and LARGE[1] == (2, 3, 6, 7, 10, 11)


@pytest.mark.parametrize("size", [(6, 8), (7, 10)])
def test_global_region_equals_the_whole_image_descriptor(size):
    agg = _aggregator(size)
    x = torch.randn(2, 32, *size)
    with torch.no_grad():
        regions = region_descriptors(agg, x)
        whole = agg(x)
    assert regions.shape == (2, 21, agg.out_dim)
    torch.testing.assert_close(regions[:, 0], whole, rtol=1e-5, atol=1e-6)


def test_every_region_is_the_normalised_sum_of_its_cells():
    agg = _aggregator()
    x = torch.randn(1, 32, 6, 8)
    with torch.no_grad():
        regions = region_descriptors(agg, x)
        cells = agg.optlad.patch_vlads(agg.refine(x), 3, 4)
    for r, members in enumerate(REGIONS):
        expected = OptLAD.normalise(cells[:, list(members)].sum(1))
        torch.testing.assert_close(regions[:, r], expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(regions.norm(dim=-1), torch.ones(1, 21))


def test_hardest_region_is_the_one_most_similar_to_the_anchor():
    anchor = F.normalize(torch.randn(2, 8), dim=-1)
    regions = F.normalize(torch.randn(2, 3, 21, 8), dim=-1)
    picked = hardest_regions(anchor, regions)
    for b in range(2):
        for n in range(3):
            best = (regions[b, n] @ anchor[b]).argmax()
            torch.testing.assert_close(picked[b, n], regions[b, n, best])


def test_generation_one_loss_is_hardest_region_sare_plus_half_soft():
    torch.manual_seed(0)
    student, teacher = _Model(_aggregator()), _Model(_aggregator())
    # tuple: anchor, positive, 1 negative, 2 difficult positives
    inputs = torch.randn(2, 5, 32, 6, 8)
    cfg = TrainConfig(neg_num=1, pos_num=2, temperatures=(0.07, 0.05), soft_weight=0.5)
    loss, parts = PyramidRecipe().loss(student, teacher, _CachedLike(), inputs, cfg, generation=1)
    with torch.no_grad():
        s = region_descriptors(student.aggregator, inputs.flatten(0, 1)).view(2, 5, 21, -1)
        t = region_descriptors(teacher.aggregator, inputs.flatten(0, 1)).view(2, 5, 21, -1)
    anchor = s[:, 0, 0]
    hard = sare_ind(anchor, s[:, 1, 0], hardest_regions(anchor, s[:, 2:3]), temperature=0.07)
    soft = soft_cross_entropy(region_logits(anchor, s[:, 3:], 0.07), region_logits(t[:, 0, 0], t[:, 3:], 0.05))
    assert region_logits(anchor, s[:, 3:], 0.07).shape == (2, 2 * 21)
    assert parts["hard"] == pytest.approx(hard.item(), rel=1e-5)
    assert parts["soft"] == pytest.approx(soft.item(), rel=1e-5)
    assert loss.item() == pytest.approx(hard.item() + 0.5 * soft.item(), rel=1e-5)


def test_generation_zero_is_the_hard_loss_on_global_descriptors():
    student = _Model(_aggregator())
    inputs = torch.randn(2, 3, 32, 6, 8)
    cfg = TrainConfig(neg_num=1, temperatures=(0.07,))
    loss, parts = PyramidRecipe().loss(student, None, _CachedLike(), inputs, cfg, generation=0)
    with torch.no_grad():
        d = student.aggregator(inputs.flatten(0, 1)).view(2, 3, -1)
    assert loss.item() == pytest.approx(sare_ind(d[:, 0], d[:, 1], d[:, 2:], temperature=0.07).item(), rel=1e-5)
    assert set(parts) == {"hard"}


def test_the_pyramid_is_clusvprs_default_recipe():
    import registry
    from registry.training import get_recipe

    model = registry.create("clusvpr_vgg16", input_size=(48, 64), num_clusters=4, cwt_depth=1, whitening_dim=None)
    assert get_recipe("auto", model).name == "pyramid"
    assert get_recipe("auto", registry.create("gem_vgg16", input_size=(48, 64))).name == "global"
