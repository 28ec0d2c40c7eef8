"""Fixtures for the whole suite."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_input():
    """Two 3x64x96 images: a 4x6 conv5 map."""
    return torch.randn(2, 3, 64, 96)
