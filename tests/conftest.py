"""Shared fixtures: where ../shared lives, and small models for fast tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden" / "clusvpr_reference_golden.safetensors"
VGG_WEIGHTS = SHARED / "weights" / "vgg16_hed_conv.safetensors"


def need_shared(path: Path) -> Path:
    """Skip (with the reason) when a ../shared file is absent; CI has it."""
    if not path.exists():
        pytest.skip(f"{path} is absent: place the project's shared/ folder beside the repository to run this test")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_input():
    """Two 3x64x96 images: a 4x6 conv5 map."""
    return torch.randn(2, 3, 64, 96)
