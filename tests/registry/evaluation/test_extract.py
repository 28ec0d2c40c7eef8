"""extract_descriptors: order and values independent of the batch size, resize policies, clear image errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import registry
from registry.datasets import ImageReadError
from registry.datasets.base import VPRDataset
from registry.evaluation import Preprocess, extract_dataset, extract_descriptors

CONFIG = {"input_size": (3, 16, 24), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.3, 0.4), "resize": "fixed",
          "interpolation": "bilinear"}


class StandIn(nn.Module):
    """Conv + BatchNorm + pooled spatial layout: its output depends on every pixel and on eval mode."""

    def __init__(self, resize: str = "fixed") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.input_config = dict(CONFIG, resize=resize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), (2, 2)).flatten(1)
        return F.normalize(y, dim=-1)


def write_images(folder: Path, sizes) -> list:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def one_by_one(model: nn.Module, paths, pre: Preprocess) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(pre(Image.open(p).convert("RGB"))[None]).numpy() for p in paths])


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_descriptors_do_not_depend_on_the_batch_size(tmp_path, batch_size):
    paths = write_images(tmp_path, [(30, 20)] * 7)
    model = StandIn()
    expected = one_by_one(model, paths, Preprocess(CONFIG))
    got = extract_descriptors(model, paths, batch_size=batch_size, device="cpu", progress=False)
    assert got.dtype == np.float32 and got.shape == (7, 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_longer_side_policy_keeps_aspect_and_batches_equal_sizes(tmp_path):
    paths = write_images(tmp_path, [(40, 20), (20, 40), (40, 20), (33, 11), (20, 40)])
    model = StandIn(resize="longer_side")
    pre = Preprocess(model.input_config)
    assert pre(Image.open(paths[0]).convert("RGB")).shape == (3, 12, 24)
    assert pre(Image.open(paths[1]).convert("RGB")).shape == (3, 24, 12)
    got = extract_descriptors(model, paths, batch_size=4, device="cpu", progress=False)
    np.testing.assert_allclose(got, one_by_one(model, paths, pre), atol=1e-5)


def test_dataset_query_resize_applies_to_queries_only(tmp_path):
    db = write_images(tmp_path / "db", [(60, 30)] * 2)
    q = write_images(tmp_path / "q", [(60, 30)] * 2)
    ds = VPRDataset("t", tmp_path, db, q, [np.array([0]), np.array([1])], query_longer_side=40)
    model = StandIn()
    q_desc, db_desc = extract_dataset(model, ds, batch_size=2, device="cpu", progress=False)
    np.testing.assert_allclose(db_desc, one_by_one(model, db, Preprocess(CONFIG)), atol=1e-5)
    np.testing.assert_allclose(q_desc, one_by_one(model, q, Preprocess(CONFIG, "longer_side", 40)), atol=1e-5)


def test_training_mode_is_restored_after_extraction(tmp_path):
    paths = write_images(tmp_path, [(30, 20)] * 2)
    model = StandIn().train()
    extract_descriptors(model, paths, batch_size=2, device="cpu", progress=False)
    assert model.training


def test_corrupt_image_is_named(tmp_path):
    paths = write_images(tmp_path, [(30, 20)] * 2)
    paths[1].write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"001.png"):
        extract_descriptors(StandIn(), paths, batch_size=2, device="cpu", progress=False)


def test_real_registry_model_matches_its_own_transform_for_any_batch_size(tmp_path):
    model = registry.create("gem_resnet50", input_size=(32, 48))
    paths = write_images(tmp_path, [(64, 40)] * 5)
    own = model.transform()
    with torch.no_grad():
        expected = model.eval()(torch.stack([own(Image.open(p).convert("RGB")) for p in paths])).numpy()
    for batch_size in (1, 5):
        got = extract_descriptors(model, paths, batch_size=batch_size, device="cpu", progress=False)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_extraction_runs_the_models_own_encode(tmp_path):
    """extract_descriptors and VPRModel.encode share one inference step (registry.models.model.encode_images): one
    batch of the same images gives bit-identical descriptors."""
    model = registry.create("gem_resnet50", input_size=(32, 48)).eval()
    paths = write_images(tmp_path, [(64, 40)] * 4)
    own = model.transform()
    batch = torch.stack([own(Image.open(p).convert("RGB")) for p in paths])
    got = extract_descriptors(model, paths, batch_size=4, device="cpu", progress=False)
    assert np.array_equal(got, model.encode(batch).numpy())
