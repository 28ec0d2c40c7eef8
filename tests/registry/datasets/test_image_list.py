"""ImageListDataset: tensors in order, and errors that name the missing or corrupt file."""
import pytest
import torch
from miniature import write_images

from registry.datasets import ImageListDataset, ImageReadError


def _to_tensor(img):
    return torch.tensor(img.size)


def test_items_are_transformed_images_with_their_index(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"])
    ds = ImageListDataset([tmp_path / "a.png", tmp_path / "b.png"], _to_tensor)
    x, i = ds[1]
    assert i == 1 and x.tolist() == [8, 6] and len(ds) == 2


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match=r"cannot read image .*broken.jpg"):
        ImageListDataset([bad])[0]


def test_truncated_image_error_names_the_file(tmp_path):
    write_images(tmp_path, ["t.jpg"])
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t.jpg"):
        ImageListDataset([tmp_path / "t.jpg"])[0]


def test_missing_image_error_names_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"image file not found: .*gone.png"):
        ImageListDataset([tmp_path / "gone.png"])[0]
