"""16-bit images reach the models scaled to the same [0, 1] intensities as 8-bit ones, never clipped at 255
(Pillow's convert("RGB") clips I;16 and I images) or wrapped (np.asarray(img, dtype=uint8))."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from registry.datasets import ImageReadError, open_rgb
from registry.models.preprocess import Preprocess

H, W = 32, 48
HALF_STEP = 0.5 / 255


def _ramp() -> np.ndarray:
    """A (H, W) 16-bit ramp over the whole range, 0 and 65535 included."""
    return np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)


def _exact(values: np.ndarray) -> np.ndarray:
    """The intensities in [0, 1], in float64."""
    return values.astype(np.float64) / 65535.0


def _save_16_bit(path: Path, mode: str, values: np.ndarray) -> Path:
    if mode == "I;16":
        Image.frombytes("I;16", (W, H), values.astype("<u2").tobytes()).save(path)
    elif mode == "I;16B":
        Image.frombytes("I;16B", (W, H), values.astype(">u2").tobytes()).save(path)
    else:  # a 32-bit integer image holding 16-bit values
        Image.frombytes("I", (W, H), values.astype("<i4").tobytes()).save(path)
    return path


@pytest.mark.parametrize("mode,suffix", [("I;16", ".png"), ("I;16B", ".tif"), ("I", ".tif")])
def test_a_16_bit_greyscale_file_is_scaled_to_8_bits_not_clipped(tmp_path, mode, suffix):
    values = _ramp()
    path = _save_16_bit(tmp_path / f"grey{suffix}", mode, values)
    assert Image.open(path).mode == mode  # the mode under test is what Pillow opens
    rgb = np.asarray(open_rgb(path), dtype=np.float64) / 255.0
    assert rgb.shape == (H, W, 3) and (rgb == rgb[..., :1]).all()
    assert np.abs(rgb[..., 0] - _exact(values)).max() <= HALF_STEP + 1e-12
    assert (rgb == 1.0).mean() < 0.01  # the clipped conversion made 99% of this ramp white


def _save_rgb48_png(path: Path, values: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16), which Pillow cannot write."""
    h, w, _ = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_a_16_bit_colour_png_is_within_one_8_bit_step_of_the_exact_intensities(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    rgb = np.asarray(open_rgb(_save_rgb48_png(tmp_path / "rgb48.png", values)), dtype=np.float64) / 255.0
    assert np.abs(rgb - _exact(values)).max() <= 1 / 255  # Pillow decodes the high byte: v >> 8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [1, 1, 1]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_preprocess_scales_a_16_bit_image_passed_to_it_directly(mode):
    values = _ramp()
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    img = Image.frombytes(mode, (W, H), values.astype(dtype).tobytes())
    x = Preprocess({"input_size": (3, H, W), "mean": (0, 0, 0), "std": (1, 1, 1)})(img)
    assert x.shape == (3, H, W)
    assert np.abs(x.double().numpy() - _exact(values)[None]).max() <= HALF_STEP + 1e-6


def test_an_8_bit_image_is_unchanged(tmp_path):
    values = np.random.default_rng(1).integers(0, 256, (H, W, 3)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "rgb.png")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "rgb.png")), values)


def test_a_floating_point_image_is_refused_naming_the_file_and_its_mode(tmp_path):
    Image.fromarray(np.full((H, W), 0.5, np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match=rf"cannot use image {tmp_path / 'float.tif'} \(mode F\): a floating-point "
                                             r"image \(mode F\) has no defined intensity range"):
        open_rgb(tmp_path / "float.tif")


def test_a_32_bit_image_with_values_beyond_16_bits_is_refused(tmp_path):
    values = np.full((H, W), 70000, np.int32)
    Image.frombytes("I", (W, H), values.tobytes()).save(tmp_path / "deep.tif")
    with pytest.raises(ImageReadError, match=r"\(mode I\): a 32-bit integer image \(mode I\) with values in "
                                             r"70000\.\.70000: only 0\.\.65535"):
        open_rgb(tmp_path / "deep.tif")


def test_a_16_bit_image_queried_on_a_place_index_is_scaled_like_its_8_bit_copy():
    """PlaceIndex.query takes PIL images too: a 16-bit greyscale image finds what its 8-bit copy finds, with the
    same similarities (it was clipped to 255 before)."""
    import numpy as np
    import torch
    from PIL import Image

    import registry
    from registry.evaluation import PlaceIndex

    torch.manual_seed(0)
    model = registry.create("gem_vgg16", input_size=(64, 64)).eval()
    rng = np.random.default_rng(0)
    index = PlaceIndex(model.descriptor_dim, model=model)
    db = rng.standard_normal((20, model.descriptor_dim)).astype(np.float32)
    index.add(db / np.linalg.norm(db, axis=1, keepdims=True), [f"place{i}" for i in range(20)])
    values = rng.integers(0, 65536, (64, 64), dtype=np.uint16)
    wide = Image.frombytes("I;16", (64, 64), values.astype("<u2").tobytes())
    narrow = Image.fromarray(np.round(values / 257).astype(np.uint8), mode="L")
    got, expected = index.query(wide, k=5), index.query(narrow, k=5)
    assert [p for p, _ in got] == [p for p, _ in expected]
    assert np.allclose([d for _, d in got], [d for _, d in expected], atol=1e-5)
