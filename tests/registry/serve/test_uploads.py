"""An upload is parsed once: one Image.open of its bytes gives the header facts (size, format, the pixel budget's
check) and the pixels, decoded to the same 8-bit RGB as the library's file reader."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from registry.datasets.images import open_rgb
from registry.serve.uploads import BadRequest, Limits, decode_upload


def _counted_opens(monkeypatch) -> list:
    calls: list = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append(a) or original(*a, **k))
    return calls


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_an_upload_is_opened_once_and_decoded_as_a_file_of_it_would_be(fmt, suffix, tmp_path, monkeypatch):
    data = _encoded((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8), fmt)
    (tmp_path / f"a{suffix}").write_bytes(data)
    want = np.asarray(open_rgb(tmp_path / f"a{suffix}"))
    opens = _counted_opens(monkeypatch)
    upload = decode_upload(data, f"a{suffix}", Limits())
    assert len(opens) == 1 and upload.suffix == suffix and upload.data == data
    assert upload.image.mode == "RGB" and np.array_equal(np.asarray(upload.image), want)


def test_a_16_bit_upload_is_scaled_to_8_bits_not_clipped(monkeypatch):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)  # 0, 1, 255 and 128 in 8 bits
    opens = _counted_opens(monkeypatch)
    upload = decode_upload(_encoded(values, "PNG"), "deep.png", Limits())
    assert len(opens) == 1 and np.asarray(upload.image)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_an_image_over_the_pixel_budget_is_refused_from_its_header_before_its_pixels_are_decoded(monkeypatch):
    data = _encoded(np.zeros((40, 50, 3), np.uint8), "PNG")
    loads: list = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self))
    with pytest.raises(BadRequest, match="50x40 = 2,000 pixels, more than this server's pixel budget of 1,999") as err:
        decode_upload(data, "big.png", Limits(max_pixels=1999))
    assert err.value.status == 413 and loads == []


def test_a_truncated_upload_is_a_400_naming_it():
    data = _encoded((np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8), "JPEG")
    with pytest.raises(BadRequest, match="half.jpg: a truncated or corrupt image") as err:
        decode_upload(data[: len(data) // 2], "half.jpg", Limits())
    assert err.value.status == 400
