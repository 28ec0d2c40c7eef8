"""A map store whose Lance files were damaged (real bytes: deleted, truncated, garbage, copied from another store):
one StoreDamagedError naming the store, the file and the manifests to delete, and following that fix resumes the
extraction to the rows of an uninterrupted run. A create killed while writing its first manifest does not block
the rerun."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_encoder import TinyEncoder, write_images  # pytest puts this folder on the import path

from registry.evaluation import StoreDamagedError, extract_descriptors, extract_to_store, open_store

lance = pytest.importorskip("lance")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Images and two finished stores of the same schema (models 0 and 1), 3 chunks each (versions 1..4)."""
    root = tmp_path_factory.mktemp("stores")
    images = write_images(root / "images", 12)
    for seed in (0, 1):
        extract_to_store(TinyEncoder(seed=seed), images, root / f"store{seed}", chunk_size=4, device="cpu",
                         progress=False)
    return root, images


def _last_fragment(folder: Path) -> Path:
    return folder / "data" / lance.dataset(str(folder)).get_fragments()[-1].data_files()[0].path


def _last_manifest(folder: Path) -> Path:
    return min((folder / "_versions").glob("*.manifest"))  # Lance names them 2^64 - 1 - version: newest first


def _flip_near_the_end(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "fragment deleted": (lambda d, o: _last_fragment(d).unlink(), r"data file data/\S+\.lance is missing"),
    "fragment truncated": (lambda d, o: _last_fragment(d).write_bytes(_last_fragment(d).read_bytes()[:600]),
                           r"data file data/\S+\.lance cannot be read"),
    "fragment footer flipped": (lambda d, o: _flip_near_the_end(_last_fragment(d)),
                                r"data file data/\S+\.lance cannot be read"),
    "fragment of another store": (lambda d, o: shutil.copyfile(_last_fragment(o), _last_fragment(d)),
                                  r"data file data/\S+\.lance belongs to another map store"),
    "manifest truncated": (lambda d, o: _last_manifest(d).write_bytes(_last_manifest(d).read_bytes()[:300]),
                           r"the manifest of its last version \(4, _versions/\d+\.manifest\) cannot be read"),
    "manifest garbage": (lambda d, o: _last_manifest(d).write_bytes(b"\x00not a manifest" * 40),
                         r"the manifest of its last version \(4, _versions/\d+\.manifest\) cannot be read"),
    "manifest of another store": (lambda d, o: shutil.copyfile(_last_manifest(o), _last_manifest(d)),
                                  r"data file data/\S+\.lance is missing"),
    # Lance panics (pyo3's PanicException, a BaseException) on these two: once a raw error the trust sweep found
    "fragment emptied": (lambda d, o: _last_fragment(d).write_bytes(b""), r"data file data/\S+\.lance cannot be read"),
    "manifest byte 3 flipped": (lambda d, o: _flip_at(_last_manifest(d), 3),
                                r"the manifest of its last version \(4, _versions/\d+\.manifest\) cannot be read"),
    "manifest schema byte flipped": (lambda d, o: _flip_at(_last_manifest(d), _last_manifest(d).read_bytes().index(
        b"double")), r"the manifest of its last version \(4, _versions/\d+\.manifest\) cannot be read"),
    "byte flipped inside a data page": (lambda d, o: _flip_at(_last_fragment(d), _descriptor_offset(d)),
                                        r"data file data/\S+\.lance does not match the sha256 recorded in "
                                        r"_checksums/\S+\.lance\.sha256 when it was committed"),
}


def _flip_at(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def _descriptor_offset(folder: Path) -> int:
    """Where the last fragment's descriptor values lie in its file (found by their bytes), plus a few values."""
    fragment = lance.dataset(str(folder)).get_fragments()[-1]
    values = fragment.to_table(columns=["descriptor"]).column("descriptor").combine_chunks().flatten()
    return _last_fragment(folder).read_bytes().index(values.to_numpy().astype(np.float32).tobytes()) + 4 * 5 + 2


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_fragment_or_manifest_names_the_store_the_file_and_the_fix_which_resumes(made, tmp_path, damage):
    """Before: raw pyarrow ArrowInvalid / 'not a readable map store' errors, Lance panics, a flipped page read back
    as other descriptors, and every rerun blocked."""
    root, images = made
    store = tmp_path / "store"
    shutil.copytree(root / "store0", store)
    spoil, problem = DAMAGE[damage]
    spoil(store, root / "store1")
    fix = (r"version 3 is the last that can be used: delete (_versions/\d+\.manifest) \(the manifests of the versions "
           r"after it\) and run the extraction again to resume from version 3")
    for attempt in (lambda: open_store(store),
                    lambda: extract_to_store(TinyEncoder(), images, store, chunk_size=4, device="cpu",
                                             progress=False)):
        named = f"map store {re.escape(str(store))} is damaged: (its )?{problem}"
        with pytest.raises(StoreDamagedError, match=named) as err:
            attempt()
        assert re.search(fix, str(err.value)) and "delete the store folder and extract again" in str(err.value)
    (store / re.search(fix, str(err.value)).group(1)).unlink()  # the fix the message gives
    model = TinyEncoder()
    resumed = extract_to_store(model, images, store, chunk_size=4, batch_size=4, device="cpu", progress=False)
    assert model.calls == 1  # only the last chunk is extracted again
    np.testing.assert_allclose(np.asarray(resumed.descriptors),
                               extract_descriptors(TinyEncoder(), images, device="cpu", progress=False), atol=1e-6)


def test_a_half_written_first_manifest_neither_blocks_nor_delays_the_rerun(made, tmp_path):
    """A create killed while Lance wrote its first manifest leaves `_versions/<name>.manifest#1`, half of a real
    manifest, and no committed version. Before: every rerun waited 30 s, then failed with 'Not found: _versions'.
    Now opening it names the problem at once, and the rerun clears the folder and extracts."""
    root, images = made
    store = tmp_path / "store"
    lance.write_dataset(lance.dataset(str(root / "store0"), version=1).schema.empty_table(), str(store),
                        mode="create")
    manifest = _last_manifest(store)
    half = manifest.read_bytes()[: manifest.stat().st_size // 2]
    for path in (store / "_versions").iterdir():
        path.unlink()
    (store / "_versions" / (manifest.name + "#1")).write_bytes(half)
    with pytest.raises(StoreDamagedError, match=r"holds no committed version .*nothing was committed"):
        open_store(store)
    start = time.monotonic()
    done = extract_to_store(TinyEncoder(), images, store, chunk_size=4, device="cpu", progress=False)
    assert time.monotonic() - start < 20 and done.complete
    np.testing.assert_allclose(np.asarray(done.descriptors),
                               extract_descriptors(TinyEncoder(), images, device="cpu", progress=False), atol=1e-6)


def test_a_byte_flipped_inside_a_data_page_is_read_back_unchecked_but_refused_by_its_recorded_sha256(made, tmp_path):
    """A descriptor byte flipped in a fragment: Lance reads the store back with another descriptor and no error (the
    store opened without verifying, MapStore(verify=False)); opened as usual, every data file is checked against the
    sha256 recorded at its commit, and the flip is a StoreDamagedError naming the file."""
    from registry.evaluation import MapStore

    root, images = made
    store = tmp_path / "store"
    shutil.copytree(root / "store0", store)
    intact = np.asarray(open_store(store).descriptors)
    _flip_at(_last_fragment(store), _descriptor_offset(store))
    unchecked = np.asarray(MapStore(store, verify=False).descriptors)
    changed = np.flatnonzero((unchecked != intact).any(axis=1)).tolist()
    assert len(changed) == 1 and changed[0] >= 8  # one row of the last chunk (rows 8..11)
    with pytest.raises(StoreDamagedError, match=r"data file data/\S+\.lance does not match the sha256 recorded"):
        open_store(store)
