"""Reference checkpoints: safe (weights_only) reading, name mapping, BN copy, strict keys, PCA beside."""
import collections

import pytest
import torch
from safetensors.torch import load_file
from shared_paths import GOLDEN, need_shared

import registry
from clusvpr_plugin.convert import whitening_from_pca_layer
from registry.models.backbones import VGG16Backbone
from registry.whitening import PCAWhitening


@pytest.fixture(scope="module")
def reference_state():
    golden = load_file(str(need_shared(GOLDEN)))
    state = collections.OrderedDict((k, v) for k, v in golden.items() if k.startswith("module."))
    for k, v in VGG16Backbone().state_dict().items():
        state["module.base_model.base." + k.split(".", 1)[1]] = v
    return golden, state


def save_ckpt(path, state):
    torch.save({"state_dict": dict(state), "epoch": 4, "best_recall5": 0.91}, path)
    return str(path)


def test_reference_checkpoint_reproduces_golden_outputs(tmp_path, reference_state):
    golden, state = reference_state
    model = registry.create("clusvpr_vgg16", pretrained=save_ckpt(tmp_path / "model_best.pth.tar", state))
    with torch.no_grad():
        desc = model.aggregator(golden["input.conv5"])
    assert ((desc - golden["output.descriptor"]).norm() / golden["output.descriptor"].norm()) < 1e-5
    bn = model.aggregator.cwt[2]
    assert torch.equal(bn.bn_global.weight, golden["module.net_vlad.vit_layer.2.local_bn.weight"])
    assert torch.equal(model.backbone.features[28].weight, state["module.base_model.base.28.weight"])
    assert not model.training


def test_missing_key_is_an_error_that_names_it(tmp_path, reference_state):
    _, state = reference_state
    broken = {k: v for k, v in state.items() if k != "module.net_vlad.linear1.weight"}
    with pytest.raises(KeyError, match="aggregator.optlad.linear.weight"):
        registry.create("clusvpr_vgg16", pretrained=save_ckpt(tmp_path / "m.pth.tar", broken))


def test_unknown_key_is_an_error_that_names_it(tmp_path, reference_state):
    _, state = reference_state
    broken = dict(state, **{"module.net_vlad.extra.weight": torch.zeros(2)})
    with pytest.raises(KeyError, match="net_vlad.extra.weight"):
        registry.create("clusvpr_vgg16", pretrained=save_ckpt(tmp_path / "m.pth.tar", broken))


class Payload:
    """Anything that is not plain tensors: a weights-only load must refuse to build it."""


def test_checkpoints_holding_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": Payload()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        registry.create("clusvpr_vgg16", pretrained=str(path))


def test_pca_h5_beside_the_checkpoint_becomes_the_whitening(tmp_path, reference_state):
    golden, state = reference_state
    pca = PCAWhitening(8192, 4096).set_params(torch.randn(8192, 4096) * 0.01,
                                              torch.rand(4096) + 0.1, torch.randn(8192) * 0.01)
    pca.to_h5(tmp_path / "pca.h5")
    model = registry.create("clusvpr_vgg16", pretrained=save_ckpt(tmp_path / "model_best.pth.tar", state))
    assert model.whitening.fitted and model.descriptor_dim == 4096
    v = model.aggregator(golden["input.conv5"])
    assert torch.allclose(model.whitening(v), pca(v), atol=1e-5)


def test_folded_pca_layer_is_recovered_exactly():
    pca = PCAWhitening(12, 5).fit(torch.randn(40, 12))
    W = pca.U.T / pca.lams.sqrt().unsqueeze(1)
    b = -W @ pca.mu
    x = torch.randn(3, 12)
    assert torch.allclose(whitening_from_pca_layer(W[:, :, None, None], b)(x), pca(x), atol=1e-5)


def test_nan_in_a_reference_checkpoint_is_refused_naming_the_file_and_the_tensor(tmp_path, reference_state):
    _, state = reference_state
    poisoned = dict(state)
    poisoned["module.net_vlad.linear1.weight"] = state["module.net_vlad.linear1.weight"].clone()
    poisoned["module.net_vlad.linear1.weight"][0, 0] = float("nan")
    path = save_ckpt(tmp_path / "m.pth.tar", poisoned)
    with pytest.raises(registry.NonFiniteValuesError,
                       match=rf"the reference checkpoint {path} holds NaN or Inf values in 1 tensor\(s\): "
                             r"aggregator.optlad.linear.weight \(1 of"):
        registry.create("clusvpr_vgg16", pretrained=path)
