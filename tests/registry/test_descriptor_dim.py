"""descriptor_dim= at load time: the leading components of a fitted whitening, or a ValueError naming the sizes."""
import pytest
import torch
import torch.nn.functional as F

import registry

SMALL = {"input_size": (64, 96), "num_clusters": 4, "whitening_dim": 64}  # NetVLAD: 4 x 512 = 2048 -> 64


@pytest.fixture
def saved(tmp_path):
    """A NetVLAD with a fitted 64-d whitening, saved in the Hub layout; (folder, model)."""
    model = registry.create("netvlad_vgg16", **SMALL)
    model.fit_whitening(F.normalize(torch.randn(80, model.whitening.in_dim), dim=-1))
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m", model


def _leading_components(model, images: torch.Tensor, k: int) -> torch.Tensor:
    """The first k whitened coordinates, L2-normalised, computed from the whitening's parameters directly."""
    w = model.whitening
    with torch.no_grad():
        d = model.aggregator(model.local_features(images))
        return F.normalize((d - w.mu) @ w.U[:, :k] * w.lams[:k].rsqrt(), dim=-1)


@pytest.mark.parametrize("dim", [64, 32, 16])
def test_descriptor_dim_keeps_the_leading_whitening_components(saved, dim):
    folder, full = saved
    model = registry.create("netvlad_vgg16", pretrained=folder, descriptor_dim=dim)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(images)
    assert out.shape == (2, dim) and model.descriptor_dim == dim == model.config["descriptor_dim"]
    assert torch.allclose(out, _leading_components(full, images, dim), atol=1e-5)


def test_the_aggregator_size_gives_the_unwhitened_descriptor(saved):
    folder, full = saved
    model = registry.VPRModel.from_pretrained(folder, descriptor_dim=full.aggregator.out_dim)
    images = torch.randn(2, 3, 64, 96)
    assert model.whitening is None and model.descriptor_dim == 2048
    with torch.no_grad():
        assert torch.allclose(model(images), full.aggregator(full.local_features(images)), atol=1e-6)


def test_a_chosen_descriptor_dim_survives_save_and_load(saved, tmp_path):
    folder, _ = saved
    registry.create("netvlad_vgg16", pretrained=folder, descriptor_dim=16).save_pretrained(tmp_path / "small")
    assert registry.VPRModel.from_pretrained(tmp_path / "small").descriptor_dim == 16


@pytest.mark.parametrize("dim", [65, 0, 4096])
def test_an_unavailable_size_is_a_value_error_listing_the_valid_sizes(saved, dim):
    folder, _ = saved
    with pytest.raises(ValueError, match=r"valid sizes are 1\.\.64 .*, e\.g\. 64\) or 2048 \(no whitening\)"):
        registry.create("netvlad_vgg16", pretrained=folder, descriptor_dim=dim)


def test_a_model_without_fitted_whitening_has_only_its_own_size():
    assert registry.create("gem_vgg16", input_size=(64, 96), descriptor_dim=512).descriptor_dim == 512
    with pytest.raises(ValueError, match="gives 512-d descriptors only, not 256: it has no fitted PCA whitening"):
        registry.create("gem_vgg16", input_size=(64, 96), descriptor_dim=256)
    with pytest.raises(ValueError, match="no fitted PCA whitening"):
        registry.create("netvlad_vgg16", **SMALL, descriptor_dim=32)  # its whitening is not fitted yet


@pytest.mark.parametrize("name", registry.list_models(pretrained=True))
def test_released_weights_give_their_leading_components_or_refuse_without_whitening(name):
    full = registry.create(name, pretrained=True)
    k = min(256, full.descriptor_dim - 1)
    if full.whitening is None or not full.whitening.fitted:  # e.g. a release shipped without its whitening
        with pytest.raises(ValueError, match="no fitted PCA whitening"):
            registry.create(name, pretrained=True, descriptor_dim=k)
        return
    model = registry.create(name, pretrained=True, descriptor_dim=k)
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(model(images), _leading_components(full, images, k), atol=1e-5)
