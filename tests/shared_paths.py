"""Paths the tests share (a uniquely named module: several conftest.py files exist, so none is imported by name)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden" / "clusvpr_reference_golden.safetensors"
VGG_WEIGHTS = SHARED / "weights" / "vgg16_hed_conv.safetensors"


def need_shared(path: Path) -> Path:
    """Skip (with the reason) when a ../shared file is absent; CI has it."""
    if not path.exists():
        pytest.skip(f"{path} is absent: place the project's shared/ folder beside the repository to run this test")
    return path
