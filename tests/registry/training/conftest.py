"""Fixtures for the training tests: tiny generated traversals and the tiny registry models of tiny_vpr."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import pytest
import tiny_vpr

from registry.datasets import load_dataset


@pytest.fixture(scope="session")
def tiny_roots(tmp_path_factory) -> Tuple[Path, Path]:
    """(training, validation) traversal folders: 16 and 12 places."""
    base = tmp_path_factory.mktemp("tiny_traversals")
    return tiny_vpr.write_traversal(base / "train", places=16, seed=0), \
        tiny_vpr.write_traversal(base / "val", places=12, seed=1)


@pytest.fixture
def tiny_sets(tiny_roots):
    """(training, validation) VPRDatasets; same file name = same place, negatives any other place."""
    return tuple(load_dataset(f"aligned:{root}") for root in tiny_roots)



@pytest.fixture(autouse=True)
def one_thread():
    """One torch and faiss thread: the tiny models gain nothing from more, and busy CPUs make threads spin."""
    import faiss
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(before)
