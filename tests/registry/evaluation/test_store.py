"""Descriptor store: streamed chunks equal in-memory extraction, a killed run resumes, a foreign store is refused."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_encoder import TinyEncoder, write_images  # pytest puts this folder on the import path

from registry.evaluation import StoreMismatchError, extract_descriptors, extract_to_store, open_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images", 18)


def test_store_round_trip_equals_in_memory_extraction(images, tmp_path):
    model = TinyEncoder()
    store = extract_to_store(model, images, tmp_path / "store", chunk_size=4, batch_size=3, device="cpu",
                             progress=False)
    expected = extract_descriptors(model, images, device="cpu", progress=False)
    again = open_store(tmp_path / "store", images, store.meta["config_hash"])
    assert again.complete and again.images == images and again.num_chunks == 5
    assert isinstance(again.descriptors, np.memmap)
    np.testing.assert_allclose(again.descriptors, expected, atol=1e-6)


def test_a_finished_store_is_reused_without_recomputing(images, tmp_path):
    extract_to_store(TinyEncoder(), images, tmp_path / "store", chunk_size=4, device="cpu", progress=False)
    model = TinyEncoder()
    extract_to_store(model, images, tmp_path / "store", chunk_size=4, device="cpu", progress=False)
    assert model.calls == 0


def test_a_killed_extraction_resumes_where_it_stopped(images, tmp_path):
    store_dir = tmp_path / "store"
    # forward 1 probes the dim, 2-5 fill chunks 0 and 1; SIGKILL on forward 6, in chunk 2
    killed = subprocess.run([sys.executable, str(HERE / "tiny_encoder.py"), str(tmp_path / "images"), str(store_dir),
                             "5"], env=_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert open_store(store_dir).missing_chunks() == [2, 3, 4]
    model = TinyEncoder()
    store = extract_to_store(model, images, store_dir, chunk_size=4, batch_size=2, device="cpu", progress=False)
    assert model.calls == 5  # chunks 2, 3 (two batches each) and 4 (two images): nothing done twice
    np.testing.assert_allclose(store.descriptors, extract_descriptors(TinyEncoder(), images, device="cpu",
                                                                      progress=False), atol=1e-6)


def test_a_store_of_another_model_is_refused(images, tmp_path):
    extract_to_store(TinyEncoder(seed=0), images, tmp_path / "store", device="cpu", progress=False)
    with pytest.raises(StoreMismatchError, match=r"was made by TinyEncoder at input 16x24.*not by TinyEncoder"):
        extract_to_store(TinyEncoder(seed=1), images, tmp_path / "store", device="cpu", progress=False)


def test_a_store_of_another_input_size_is_refused(images, tmp_path):
    extract_to_store(TinyEncoder(), images, tmp_path / "store", device="cpu", progress=False)
    with pytest.raises(StoreMismatchError, match=r"at input 16x24 .*not by TinyEncoder at input 32x48"):
        extract_to_store(TinyEncoder(input_hw=(32, 48)), images, tmp_path / "store", device="cpu", progress=False)


def test_a_store_of_other_images_is_refused(images, tmp_path):
    extract_to_store(TinyEncoder(), images, tmp_path / "store", device="cpu", progress=False)
    with pytest.raises(StoreMismatchError, match=r"holds 18 other images than the 17 asked for"):
        extract_to_store(TinyEncoder(), images[1:], tmp_path / "store", device="cpu", progress=False)


def test_torchrun_ranks_fill_one_store_like_one_process(images, tmp_path):
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(HERE / "tiny_encoder.py"), str(tmp_path / "images"), str(tmp_path / "two")],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    store = open_store(tmp_path / "two")
    assert store.complete
    np.testing.assert_allclose(store.descriptors, extract_descriptors(TinyEncoder(), images, device="cpu",
                                                                      progress=False), atol=1e-6)
