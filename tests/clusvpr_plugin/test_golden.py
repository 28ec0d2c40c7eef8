"""Converted reference weights reproduce the reference implementation's golden tensors (float32, rel < 1e-5)."""
import pytest
import torch
from safetensors.torch import load_file
from shared_paths import GOLDEN, need_shared

from clusvpr_plugin.aggregator import ClusVPRAggregator
from clusvpr_plugin.convert import convert_reference_state_dict
from registry.models.aggregators.netvlad import alpha_from_clusters


@pytest.fixture(scope="module")
def golden():
    return load_file(str(need_shared(GOLDEN)))


@pytest.fixture(scope="module")
def aggregator(golden):
    converted = convert_reference_state_dict({k: v for k, v in golden.items() if k.startswith("module.")})
    agg = ClusVPRAggregator(feature_size=(30, 40)).eval()
    agg.load_state_dict({k[len("aggregator."):]: v for k, v in converted.items()}, strict=True)
    return agg


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_cwt_stack_output(golden, aggregator):
    with torch.no_grad():
        assert rel_err(aggregator.refine(golden["input.conv5"]), golden["output.cwt"]) < 1e-5


def test_optlad_output(golden, aggregator):
    with torch.no_grad():
        vlad = aggregator.optlad.vlad(aggregator.refine(golden["input.conv5"]))
    assert rel_err(vlad, golden["output.vlad"]) < 1e-5


def test_descriptor_from_the_aggregator_alone(golden, aggregator):
    with torch.no_grad():
        desc = aggregator(golden["input.conv5"])
    assert desc.shape == (2, 8192) and rel_err(desc, golden["output.descriptor"]) < 1e-5


def test_assignment_initialisation(golden):
    agg = ClusVPRAggregator(feature_size=(30, 40))
    alpha = agg.init_from_clusters(golden["init.clsts"], golden["init.traindescs"])
    assert alpha == pytest.approx(golden["init.alpha"].item(), rel=1e-5)
    assert rel_err(agg.optlad.conv.weight, golden["module.net_vlad.conv.weight"]) < 1e-5
    assert torch.equal(agg.centroids.data, golden["init.clsts"])
    assert alpha_from_clusters(golden["init.clsts"], golden["init.traindescs"])[0] == pytest.approx(alpha)


def test_parameter_counts_match_the_reference():
    import registry

    model = registry.create("clusvpr_vgg16")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # spec section 3, measured on the reference code: 14.715 M, 2.666 M, 0.542 M, 17.923 M
    assert round(count(model.backbone) / 1e6, 3) == 14.715
    assert round(count(model.aggregator.cwt) / 1e6, 3) == 2.666
    assert round(count(model.aggregator.optlad) / 1e6, 3) == 0.542
    assert round(count(model) / 1e6, 3) == 17.923
