"""Our models driven the way the peer runners drive them find the Recall@N of our own evaluation path.

The runner protocol (VPR-methods-evaluation; deep-visual-geo-localization-benchmark with --test_method
single_query is the same): `torch.hub.load(..., input_norm="imagenet")`, images read with PIL, ToTensor, ImageNet
Normalize, then torchvision Resize to the runner's --image_size; database in batches, queries at batch size 1;
faiss IndexFlatL2 over the descriptors; positives = database images within 25 m by the @UTM_east@UTM_north@ names.
Our path: `registry.evaluation.extract_dataset` + `recall_at_n` on the same folder, native normalisation.
"""
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from shared_paths import REPO
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

import registry
from registry.datasets import load_dataset
from registry.evaluation import extract_dataset, recall_at_n

# the models a peer runner reaches through torch.hub: hubconf.py's entry points (other tests register tiny models
# in the same session, which hubconf does not serve)
HUB_MODELS = ("clusvpr_vgg16", "gem_resnet50", "gem_vgg16", "netvlad_vgg16")

RECALL_VALUES = (1, 5, 10)
IMAGE_SIZE = (48, 64)  # what the model and the runner resize to; the files are larger
FILE_SIZE = (72, 96)
SMALL = {"clusvpr_vgg16": {"num_clusters": 4, "whitening_dim": 16},
         "netvlad_vgg16": {"num_clusters": 4, "whitening_dim": 16}}


def _texture(rng: np.random.Generator, size) -> np.ndarray:
    """A smooth random RGB pattern (H, W, 3) in 0..1."""
    coarse = torch.from_numpy(rng.random((1, 3, 6, 8))).float()
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _save(array: np.ndarray, path: Path) -> None:
    Image.fromarray((array * 255).round().astype(np.uint8)).save(path, quality=95)


def make_utm_folder(root: Path, size) -> Path:
    """images/test/{database,queries} with @east@north@ names, images of `size` (H, W): 12 places 100 m apart,
    6 queries 5 m off a place. Four queries look like their place; two look like another place (0.9 of it, 0.1 of
    their own), so they miss at R@1: the recalls are not all 100."""
    rng = np.random.default_rng(0)
    places = [_texture(rng, size) for _ in range(12)]
    for split in ("database", "queries"):
        (root / "images" / "test" / split).mkdir(parents=True)
    for i, img in enumerate(places):
        _save(img, root / "images" / "test" / "database" / f"@{500000 + 100 * i:.2f}@4100000.00@17@T@db{i}@.jpg")
    for j, (place, lookalike) in enumerate([(0, 0), (2, 2), (5, 5), (9, 9), (1, 7), (4, 10)]):
        q = 0.9 * places[lookalike] + 0.1 * (_texture(rng, size) if place == lookalike else places[place])
        _save(q, root / "images" / "test" / "queries" / f"@{500005 + 100 * place:.2f}@4100000.00@17@T@q{j}@.jpg")
    return root


class _RunnerDataset(Dataset):
    """What the runners' test datasets do: PIL -> ToTensor -> ImageNet Normalize (-> Resize)."""

    def __init__(self, paths, image_size):
        steps = [T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
        if image_size:
            steps.append(T.Resize(size=list(image_size)))
        self.paths, self.transform = paths, T.Compose(steps)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), i


def _utm(paths) -> np.ndarray:
    return np.array([(p.split("@")[1], p.split("@")[2]) for p in paths]).astype(float)


def runner_recalls(model, root: Path, image_size):
    """Recall@N (percent) and descriptors (queries, database) as a peer runner computes them."""
    db_paths = sorted(str(p) for p in (root / "images" / "test" / "database").glob("*.jpg"))
    q_paths = sorted(str(p) for p in (root / "images" / "test" / "queries").glob("*.jpg"))
    dim = model.descriptor_dim
    db = np.empty((len(db_paths), dim), dtype="float32")
    q = np.empty((len(q_paths), dim), dtype="float32")
    with torch.inference_mode():
        for images, idx in DataLoader(_RunnerDataset(db_paths, image_size), batch_size=4):
            db[idx.numpy()] = model(images).numpy()
        for images, idx in DataLoader(_RunnerDataset(q_paths, image_size), batch_size=1):
            q[idx.numpy()] = model(images).numpy()
    index = faiss.IndexFlatL2(dim)
    index.add(db)
    _, predictions = index.search(q, max(RECALL_VALUES))
    dist = np.linalg.norm(_utm(q_paths)[:, None] - _utm(db_paths)[None], axis=-1)
    positives = [np.flatnonzero(row <= 25) for row in dist]
    hits = np.zeros(len(RECALL_VALUES))
    for preds, pos in zip(predictions, positives):
        for i, n in enumerate(RECALL_VALUES):
            if np.any(np.isin(preds[:n], pos)):
                hits[i:] += 1
                break
    return {n: 100 * h / len(q_paths) for n, h in zip(RECALL_VALUES, hits)}, q, db


def _saved_model(name: str, folder: Path) -> Path:
    """A native model with a fitted whitening where it has one, saved in the Hub layout. Its conv biases are
    random (a fresh backbone's are zero, which makes a ReLU network blind to the input's scale, and so to a
    wrong normalisation), as trained weights' are."""
    torch.manual_seed(0)
    model = registry.create(name, input_size=IMAGE_SIZE, **SMALL.get(name, {}))
    with torch.no_grad():
        for conv in model.backbone.modules():
            if isinstance(conv, torch.nn.Conv2d) and conv.bias is not None:
                conv.bias.normal_(0.0, 0.5)
    if model.whitening is not None:
        model.fit_whitening(F.normalize(torch.randn(model.whitening.out_dim + 8, model.whitening.in_dim), dim=-1))
    model.save_pretrained(folder)
    return folder


def _both_paths(name: str, root: Path, folder: Path, runner_size):
    """(our recalls, our q, our db, runner recalls, runner q, runner db) for one saved model on one folder."""
    ds = load_dataset(str(root))
    q, db = extract_dataset(registry.create(name, pretrained=folder), ds, batch_size=4, device="cpu", progress=False)
    ours = recall_at_n(q, db, ds.positives, RECALL_VALUES)["recall"]
    runner_model = torch.hub.load(str(REPO), name, source="local", pretrained=str(folder), input_norm="imagenet")
    theirs, rq, rdb = runner_recalls(runner_model.eval(), root, runner_size)
    return {n: float(ours[n]) for n in RECALL_VALUES}, q, db, theirs, rq, rdb


@pytest.mark.parametrize("name", HUB_MODELS)
def test_a_peer_runner_finds_our_recalls_and_descriptors(name, tmp_path):
    """Files at the model's input size (the runner given no --image_size): both paths see the same pixels."""
    root = make_utm_folder(tmp_path / "data", IMAGE_SIZE)
    ours, q, db, theirs, rq, rdb = _both_paths(name, root, _saved_model(name, tmp_path / name), None)
    assert ours[1] < 100  # the lookalike queries miss: a wrong input convention could change these recalls
    assert theirs == pytest.approx(ours)
    assert np.abs(rq - q).max() < 1e-5 and np.abs(rdb - db).max() < 1e-5


@pytest.mark.parametrize("name", HUB_MODELS)
def test_a_peer_runner_resizing_with_torchvision_finds_our_recalls(name, tmp_path):
    """Larger files resized by the runner (torchvision, on the normalised tensor) and by us (PIL, bilinear)."""
    root = make_utm_folder(tmp_path / "data", FILE_SIZE)
    ours, q, db, theirs, rq, rdb = _both_paths(name, root, _saved_model(name, tmp_path / name), IMAGE_SIZE)
    assert ours[1] < 100 and theirs == pytest.approx(ours)
    # the two resize implementations differ by rounding only: the descriptors nearly coincide (a wrong input
    # convention gives cosines below 1 - 4e-5 on this data)
    assert (rq * q).sum(1).min() > 1 - 2e-5 and (rdb * db).sum(1).min() > 1 - 2e-5
