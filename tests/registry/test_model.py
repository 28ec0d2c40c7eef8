"""VPRModel: descriptors, batch independence, input checks, preprocessing, gradients."""
import numpy as np
import pytest
import torch
from PIL import Image

import registry

SMALL = {"input_size": (64, 96)}


@pytest.mark.parametrize("name,dim", [("netvlad_vgg16", 64 * 512), ("gem_vgg16", 512), ("gem_resnet50", 1024),
                                      ("clusvpr_vgg16", 64 * 128)])
def test_forward_gives_l2_normalised_descriptors(name, dim, small_input):
    model = registry.create(name, **SMALL)
    out = model(small_input)
    assert out.shape == (2, dim) and model.descriptor_dim == dim
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_created_models_are_in_eval_mode():
    assert not registry.create("gem_vgg16", **SMALL).training


@pytest.mark.parametrize("name", ["netvlad_vgg16", "gem_vgg16", "clusvpr_vgg16"])
def test_batch_of_one_equals_the_same_row_in_a_batch(name):
    model = registry.create(name, **SMALL)
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        full = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(full, single, atol=1e-5)


@pytest.mark.parametrize("bad,message", [
    (torch.randn(3, 64, 96), "shape"),
    (torch.randn(1, 1, 64, 96), "shape"),
    (torch.zeros(1, 3, 64, 96, dtype=torch.uint8), "floating-point"),
])
def test_bad_images_raise_value_errors_that_say_what_was_expected(bad, message):
    model = registry.create("gem_vgg16", **SMALL)
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_too_small_feature_map_is_a_value_error():
    model = registry.create("clusvpr_vgg16", **SMALL)
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 16, 16))  # 1x1 conv5 map


def test_transform_follows_the_input_config():
    model = registry.create("clusvpr_vgg16", input_size=(48, 80))
    img = Image.fromarray(np.full((100, 120, 3), 200, dtype=np.uint8))
    x = model.transform()(img)
    assert x.shape == (3, 48, 80)
    expected = (200 / 255 - torch.tensor([0.485, 0.458, 0.408])) * 255  # RGB 0..255 minus the matconvnet mean
    assert torch.allclose(x[:, 0, 0], expected, atol=1e-3)


def test_longer_side_resize_keeps_aspect_ratio():
    model = registry.create("gem_vgg16", input_size=(480, 640), resize="longer_side")
    x = model.transform()(Image.new("RGB", (320, 480)))
    assert x.shape == (3, 640, 427)


def test_gradients_reach_trainable_backbone_layers_only():
    model = registry.create("clusvpr_vgg16", **SMALL).train()
    model(torch.randn(2, 3, 64, 96)).sum().backward()
    feats = model.backbone.features
    assert feats[24].weight.grad is not None and feats[24].weight.grad.abs().sum() > 0  # conv5_1 trains
    assert feats[0].weight.grad is None  # conv1_1 frozen (reference recipe)
    assert model.aggregator.optlad.p.grad.abs().sum() > 0
    assert model.aggregator.cwt[0].cwt.block.attn.value.weight.grad.abs().sum() > 0


def test_train_layers_all_trains_the_whole_backbone():
    model = registry.create("gem_vgg16", train_layers="all", **SMALL).train()
    model(torch.randn(1, 3, 64, 96)).sum().backward()
    assert model.backbone.features[0].weight.grad is not None


def test_backbone_and_aggregator_are_swappable():
    model = registry.create("gem_resnet50", **SMALL)
    assert model.backbone.out_channels == model.aggregator.in_channels == 1024
    other = registry.create("netvlad_vgg16", **SMALL)
    with pytest.raises(ValueError, match="channels"):
        registry.VPRModel(model.backbone, other.aggregator)


def test_fitted_whitening_sets_the_descriptor_dim(small_input):
    model = registry.create("gem_vgg16", whitening_dim=8, **SMALL)
    with torch.no_grad():
        raw = torch.cat([model.aggregator(model.local_features(torch.randn(4, 3, 64, 96))) for _ in range(4)])
    model.fit_whitening(raw)
    out = model(small_input)
    assert out.shape == (2, 8) and model.descriptor_dim == 8
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("dim", [3, None])
def test_a_chosen_whitening_size_persists_through_save_and_load(small_input, tmp_path, dim):
    model = registry.create("gem_vgg16", whitening_dim=8, **SMALL)
    with torch.no_grad():
        raw = torch.cat([model.aggregator(model.local_features(torch.randn(4, 3, 64, 96))) for _ in range(4)])
    model.fit_whitening(raw)
    with torch.no_grad():
        full = model(small_input)
    model.set_whitening_dim(dim)
    with torch.no_grad():
        out = model(small_input)
    assert model.descriptor_dim == (dim or 512) == out.shape[1]
    if dim is None:
        assert model.whitening is None
    else:  # the leading components of the 8-d whitening, renormalised
        pre = model.whitening.U.T @ (model.aggregator(model.local_features(small_input)) - model.whitening.mu).T
        torch.testing.assert_close(out, torch.nn.functional.normalize((pre.T * model.whitening.lams.rsqrt()), dim=-1))
        assert full.shape[1] == 8
    model.save_pretrained(tmp_path / "m")
    loaded = registry.create("gem_vgg16", pretrained=str(tmp_path / "m"))
    assert loaded.descriptor_dim == model.descriptor_dim
    with torch.no_grad():
        torch.testing.assert_close(loaded(small_input), out)
    with pytest.raises(RuntimeError, match="no whitening layer"):
        registry.create("gem_vgg16", **SMALL).set_whitening_dim(4)


@pytest.mark.parametrize("hw", [(80, 112), (32, 32), (48, 176)])  # 5x7, 2x2, 3x11 conv5 maps
def test_clusvpr_runs_at_odd_and_minimal_map_sizes(hw):
    model = registry.create("clusvpr_vgg16", input_size=(64, 96))
    out = model(torch.randn(1, 3, *hw))
    assert out.shape == (1, 8192) and torch.isfinite(out).all()


def test_encode_matches_forward_in_float32_on_cpu(small_input):
    model = registry.create("netvlad_vgg16", **SMALL)
    with torch.no_grad():
        assert torch.allclose(model.encode(small_input, amp=False), model(small_input), atol=1e-6)


def test_prepare_for_inference_on_cpu_gives_the_same_model_in_eval_mode(small_input):
    model = registry.create("gem_vgg16", **SMALL).train()
    with torch.no_grad():
        expected = model.eval()(small_input)
    model.train()
    prepared = model.prepare_for_inference("cpu")
    assert prepared is model and not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.backbone.features[0].weight.is_contiguous()  # channels_last is for CUDA only
    with torch.no_grad():
        assert torch.equal(prepared(small_input), expected)
    compiled = model.prepare_for_inference("cpu", compile=True)  # compiled lazily, at the first call
    assert compiled is not model and compiled._orig_mod is model


def test_bfloat16_inference_stays_close_to_float32(small_input):
    model = registry.create("clusvpr_vgg16", **SMALL)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(model.encode(small_input, amp=True), model(small_input))
    assert cos.min() > 0.99


@pytest.mark.parametrize("name,keys", [
    ("clusvpr_vgg16", {"cwt_cluster_weights", "optlad_group_attention"}),
    ("netvlad_vgg16", {"netvlad_assignment_confidence"}),
    ("gem_vgg16", {"gem_activation_energy"}),
])
def test_attention_maps_cover_the_feature_grid(name, keys):
    model = registry.create(name, **SMALL)
    maps = model.attention_maps(torch.randn(2, 3, 80, 112))  # odd 5x7 grid
    assert set(maps) == keys
    for m in maps.values():
        assert m.shape == (2, 5, 7) and torch.isfinite(m).all()
    if name == "clusvpr_vgg16":
        w = maps["cwt_cluster_weights"]
        assert w.min() >= 0 and w.max() <= 1


@pytest.mark.parametrize("name", ["netvlad_vgg16", "gem_vgg16", "clusvpr_vgg16"])
def test_an_image_smaller_than_the_backbone_allows_is_a_value_error_naming_the_expected_input(name):
    model = registry.create(name, **SMALL)
    with pytest.raises(ValueError, match=r"images of 8x8 are too small .*expected \(N, 3, H, W\) with H and W >= "
                                         r"(16|32) \(its input size is \(64, 96\)\)"):
        model(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_images_are_a_value_error(value):
    model = registry.create("gem_vgg16", **SMALL)
    x = torch.randn(2, 3, 64, 96)
    x[1, 2, 5, 7] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(x)


@pytest.mark.parametrize("damage", ["overflow", "nan_weight"])
def test_encode_raises_when_finite_images_give_non_finite_descriptors(damage):
    model = registry.create("gem_vgg16", **SMALL)
    with torch.no_grad():
        if damage == "overflow":  # activations beyond float32's range: inf, then NaN after normalising
            model.backbone.features[0].weight.mul_(1e30)
        else:
            model.aggregator.p.fill_(float("nan"))
    images = torch.rand(2, 3, 64, 96)
    with pytest.raises(registry.NonFiniteOutputError,
                       match=r"gem_vgg16 gave NaN or Inf descriptors for 2 of 2 finite images \(rows \[0, 1\]\)"):
        model.encode(images)


def test_encode_reports_only_the_rows_that_are_not_finite():
    model = registry.create("gem_vgg16", **SMALL)
    with torch.no_grad():
        model.backbone.features[0].weight.mul_(1e30)
    images = torch.rand(3, 3, 64, 96)
    images[1] = 0  # a black image: zero activations, finite even with huge weights (the biases are zero)
    torch.nn.init.zeros_(model.backbone.features[0].bias)
    with pytest.raises(registry.NonFiniteOutputError, match=r"for 2 of 3 finite images \(rows \[0, 2\]\)"):
        model.encode(images)


def test_float64_images_give_the_float32_descriptors_of_the_same_values(small_input):
    model = registry.create("netvlad_vgg16", **SMALL)
    with torch.no_grad():
        assert torch.equal(model(small_input.double()), model(small_input))


@pytest.mark.parametrize("name,dim", [("netvlad_vgg16", 64 * 512), ("gem_vgg16", 512), ("gem_resnet50", 1024),
                                      ("clusvpr_vgg16", 64 * 128)])
def test_an_empty_batch_gives_zero_descriptors_for_every_model(name, dim):
    out = registry.create(name, **SMALL)(torch.empty(0, 3, 64, 96))
    assert out.shape == (0, dim) and out.dtype == torch.float32


@pytest.mark.parametrize("name,override,message", [
    ("netvlad_vgg16", {"num_clusters": 0}, r"num_clusters = 0 .* an integer in 1\.\.1024"),
    ("clusvpr_vgg16", {"num_clusters": 0}, r"num_clusters = 0 .* an integer in 1\.\.1024"),
    ("netvlad_vgg16", {"whitening_dim": 0}, r"whitening_dim = 0 .* an integer in 1\.\.65536, or None"),
    ("gem_vgg16", {"input_size": (8, 8)}, r"input_size = \(8, 8\) .* 2 integers in 16\.\.8192"),
    ("clusvpr_vgg16", {"input_size": (16, 640)}, r"input_size = \(16, 640\) .* 2 integers in 32\.\.8192"),
])
def test_impossible_architectures_are_refused_at_creation(name, override, message):
    with pytest.raises(ValueError, match=message):
        registry.create(name, **override)


def test_an_unknown_keyword_lists_the_valid_names():
    with pytest.raises(TypeError, match=r"clusvpr_vgg16 got unexpected argument\(s\) num_cluster; valid: .*"
                                        r"backbone_weights.*cwt_depth.*num_clusters.*whitening_dim"):
        registry.create("clusvpr", num_cluster=32)
