"""The map tests: a tiny registry model (tests/registry/training/tiny_vpr.py, imported through tests/registry on
sys.path) and small image folders."""
from __future__ import annotations

import map_helpers
import pytest


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> str:
    """A tiny_gem model saved in the Hub layout: every map built from it has the same weights."""
    return map_helpers.save_weights(tmp_path_factory.mktemp("weights") / "tiny_gem")


@pytest.fixture
def images(tmp_path):
    return map_helpers.write_images(tmp_path / "images", 20)
