"""`vpr export --calibration DIR` lists a folder's images as the datasets do: natural order, recursive, and a usage
error naming the option when there are none."""
from __future__ import annotations

import pytest
from PIL import Image

from registry._util.options import UsageError
from registry.cli.export import _calibration_files


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def test_calibration_folder_images_come_in_natural_order_from_subfolders(tmp_path):
    for name in ("img10.png", "img2.png", "sub/img1.jpg", "notes.txt"):
        (_png(tmp_path / name) if name.endswith((".png", ".jpg")) else (tmp_path / name).write_text("x"))
    got = [p.relative_to(tmp_path).as_posix() for p in _calibration_files([str(tmp_path)], 10)]
    assert got == ["img2.png", "img10.png", "sub/img1.jpg"]
    assert len(_calibration_files([str(tmp_path)], 2)) == 2


def test_a_folder_without_images_is_a_usage_error_naming_the_option(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="--calibration"):
        _calibration_files([str(tmp_path)], 4)
