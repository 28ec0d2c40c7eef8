"""The service tests' tiny map (serve_helpers: a tiny_gem map of 32x48 images), built once per test module."""
from __future__ import annotations

import pytest
from serve_helpers import build_map, write_images


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    """(map folder, its image paths): 12 images, flat index."""
    root = tmp_path_factory.mktemp("serve-map")
    images = write_images(root / "images", 12)
    build_map(root / "map", images)
    return root / "map", images
