"""Fixtures for the whole suite."""
from __future__ import annotations

import os

import pytest
import torch
from shared_paths import SHARED

# the library looks for datasets only where it is told (data_root, --data-root, VPR_DATA): the tests point it at
# the project's shared/ data when that folder is beside the repository (CI has it), for this process and the
# commands it starts
if (SHARED / "data").is_dir():
    os.environ.setdefault("VPR_DATA", str(SHARED / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_input():
    """Two 3x64x96 images: a 4x6 conv5 map."""
    return torch.randn(2, 3, 64, 96)
