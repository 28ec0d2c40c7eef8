"""The map store (a Lance dataset): streamed chunks equal in-memory extraction; a killed run and a run stopped by a
full disk resume to the rows of an uninterrupted run; a foreign store, a second model writing at the same time, a
moved or modified store behind an index are refused with errors that name them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_encoder import TinyEncoder, write_images  # pytest puts this folder on the import path

from registry.evaluation import (
    IndexSpec,
    PlaceIndex,
    StoreChangedError,
    StoreMismatchError,
    extract_descriptors,
    extract_to_store,
    model_config_hash,
    open_store,
)

lance = pytest.importorskip("lance")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images", 18)


def _expected(images, seed: int = 0) -> np.ndarray:
    return extract_descriptors(TinyEncoder(seed=seed), images, device="cpu", progress=False)


def test_store_round_trip_equals_in_memory_extraction_with_places_and_coordinates(images, tmp_path):
    model = TinyEncoder()
    places = [f"p{i // 2}" for i in range(len(images))]
    coords = np.arange(2 * len(images), dtype=np.float64).reshape(-1, 2) * 1.5
    store = extract_to_store(model, images, tmp_path / "store", chunk_size=4, batch_size=3, device="cpu",
                             progress=False, places=places, coords=coords)
    again = open_store(tmp_path / "store", images, store.meta["config_hash"])
    assert again.complete and again.images == images and again.num_chunks == 5 and again.places == places
    np.testing.assert_array_equal(again.coords, coords)
    np.testing.assert_allclose(np.asarray(again.descriptors), _expected(images), atol=1e-6)
    np.testing.assert_allclose(again.descriptors[[7, 2]], _expected(images)[[7, 2]], atol=1e-6)  # random rows
    assert again.meta["model"] == "TinyEncoder" and again.meta["input_size"] == "16x24" and again.dim == 32
    assert lance.dataset(str(tmp_path / "store")).count_rows() == 18


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
    np.testing.assert_allclose(np.asarray(store.descriptors), _expected(images), atol=1e-6)
    assert store.images == images


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from tiny_encoder import TinyEncoder
from registry.evaluation import extract_to_store
images = sorted(str(p) for p in Path(sys.argv[1]).glob("*.png"))
model = TinyEncoder()
def fill_the_disk(module, inputs, output):  # after chunk 1 is computed, no file may grow past 1000 bytes
    if module.calls == 5:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
model.register_forward_hook(fill_the_disk)
try:
    extract_to_store(model, images, sys.argv[2], chunk_size=4, batch_size=2, device="cpu", progress=False)
except OSError as err:
    print("OSError", err.errno, err)
"""


def test_a_real_write_failure_mid_extraction_names_the_folder_and_resumes_to_the_same_rows(images, tmp_path):
    """RLIMIT_FSIZE in a subprocess (the kernel refuses the write, EFBIG) while chunk 1 is written: an OSError naming
    the store, chunk 0 still committed, and the rerun ends with the rows of an uninterrupted run."""
    store_dir = tmp_path / "store"
    run = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "images"), str(store_dir)], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("OSError 27") and f"the map store {store_dir}" in run.stdout, run.stdout
    assert "its last commit is intact" in run.stdout
    assert open_store(store_dir).missing_chunks() == [1, 2, 3, 4]
    resumed = extract_to_store(TinyEncoder(), images, store_dir, chunk_size=4, batch_size=2, device="cpu",
                               progress=False)
    clean = extract_to_store(TinyEncoder(), images, tmp_path / "clean", chunk_size=4, batch_size=2, device="cpu",
                             progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.descriptors), np.asarray(clean.descriptors))
    assert resumed.images == clean.images == images


RACE_ROUNDS = 32


def test_two_processes_creating_one_store_at_the_same_instant_never_both_succeed(tmp_path):
    """Two real processes (two models) meet at a barrier, then create one new store folder, 32 rounds: in each,
    exactly one writes and the other gets StoreMismatchError, and the store holds the winner's metadata and rows.
    Each round is a real race: both processes reach the create and the loser's rename finds the winner's store."""
    import multiprocessing

    import store_racer

    images = write_images(tmp_path / "images", 4)
    mp = multiprocessing.get_context("spawn")
    barrier, results = mp.Barrier(2), mp.Queue()
    procs = [mp.Process(target=store_racer.race, args=(seed, images, str(tmp_path / "stores"), RACE_ROUNDS, barrier,
                                                       results)) for seed in (0, 1)]
    for p in procs:
        p.start()
    got = [results.get(timeout=600) for _ in range(2 * RACE_ROUNDS)]
    for p in procs:
        p.join(timeout=60)
    expected = {seed: _expected(images, seed) for seed in (0, 1)}
    outcomes = {}
    for r, seed, outcome, _ in got:
        outcomes.setdefault(r, {})[seed] = outcome
    for r, by_seed in sorted(outcomes.items()):
        kinds = [by_seed[0].split()[0], by_seed[1].split()[0]]
        assert sorted(kinds) == ["refused", "wrote"], (r, by_seed)
        winner = kinds.index("wrote")
        assert "cannot be mixed" in by_seed[1 - winner]
        store = open_store(tmp_path / "stores" / f"{r:03d}")
        assert store.complete and store.meta["config_hash"] == model_config_hash(TinyEncoder(seed=winner))
        np.testing.assert_allclose(np.asarray(store.descriptors), expected[winner], atol=1e-6)
    assert sum(lost for *_, lost in got) >= RACE_ROUNDS // 2  # most rounds raced through the create itself
    assert not [p for p in (tmp_path / "stores").iterdir() if p.name.startswith(".")]  # no staging folder left


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


def test_a_store_of_the_earlier_memory_mapped_format_is_not_converted(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    np.save(old / "descriptors.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(StoreMismatchError, match="earlier memory-mapped format; stores are not converted"):
        open_store(old)


def test_torchrun_ranks_fill_one_store_like_one_process(images, tmp_path):
    """Two gloo ranks on the CPU: each writes the fragments of its chunks, rank 0 commits each round."""
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(HERE / "tiny_encoder.py"), str(tmp_path / "images"), str(tmp_path / "two")],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    store = open_store(tmp_path / "two")
    assert store.complete and store.images == images
    np.testing.assert_allclose(np.asarray(store.descriptors), _expected(images), atol=1e-6)
    versions = lance.dataset(str(tmp_path / "two")).versions()
    assert len(versions) == 1 + 3  # the creation, then one commit per round of two chunks (5 chunks: 3 rounds)


def test_an_index_refuses_a_store_that_moved_or_changed_after_indexing(images, tmp_path):
    store = extract_to_store(TinyEncoder(), images, tmp_path / "store", chunk_size=4, device="cpu", progress=False)
    index = PlaceIndex(store.dim, IndexSpec("hnsw", hnsw_m=4))
    index.add(store)
    assert index.places == images and index.store["version"] == store.version
    index.save(tmp_path / "map")
    os.rename(tmp_path / "store", tmp_path / "moved")
    with pytest.raises(StoreChangedError, match=r"built from the map store .*store, which is gone \(moved or deleted"):
        PlaceIndex.load(tmp_path / "map")
    again = PlaceIndex.load(tmp_path / "map", store=tmp_path / "moved")
    assert again.store["path"] == str((tmp_path / "moved").resolve())
    lance.dataset(str(tmp_path / "moved")).delete("row = 3")  # a new commit: the rows the index holds changed
    with pytest.raises(StoreChangedError, match=r"changed since the index .* was built from it \(version 6, now 7\)"):
        PlaceIndex.load(tmp_path / "map", store=tmp_path / "moved")


def test_without_lance_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lance", None)
    with pytest.raises(ImportError, match=r"pip install 'clusvpr-zoo\[map\]'"):
        extract_to_store(TinyEncoder(), ["x.png"], tmp_path / "store", device="cpu", progress=False)


@pytest.mark.parametrize("places", [list(range(100, 118)), list(np.arange(100, 118)), [f"{i:03d}" for i in range(18)]],
                         ids=["int", "numpy-int", "digit-strings"])
def test_place_ids_keep_their_type_through_the_store_the_index_its_query_and_save_load(images, tmp_path, places):
    model = TinyEncoder()
    store = extract_to_store(model, images, tmp_path / "store", chunk_size=4, device="cpu", progress=False,
                             places=places)
    plain = [int(p) if isinstance(p, np.integer) else p for p in places]
    assert store.places == plain and [type(p) for p in store.places] == [type(p) for p in plain]
    index = PlaceIndex(store.dim, IndexSpec("flat"), model=model)
    index.add(store)
    top = index.query(images[7], k=3)
    assert top[0][0] == plain[7] and type(top[0][0]) is type(plain[7])
    index.save(tmp_path / "index")
    again = PlaceIndex.load(tmp_path / "index", model=TinyEncoder())
    assert again.places == plain and [type(p) for p in again.places] == [type(p) for p in plain]
    assert again.query(images[7], k=3) == top


def test_an_index_refuses_a_model_other_than_the_one_that_made_its_store(images, tmp_path):
    """A store of model A added to PlaceIndex(..., model=B), and an index of A's store loaded with model=B:
    StoreMismatchError naming both config hashes (queries would be compared with another model's descriptors)."""
    a, b = TinyEncoder(seed=0), TinyEncoder(seed=1)
    store = extract_to_store(a, images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    from registry.evaluation.store_extract import model_config_hash

    want, got = store.meta["config_hash"][:12], model_config_hash(b)[:12]
    wrong = PlaceIndex(store.dim, IndexSpec("flat"), model=b)
    with pytest.raises(StoreMismatchError, match=rf"config hash {want}.*TinyEncoder \(config hash {got}\)"):
        wrong.add(store)
    assert wrong.ntotal == 0 and wrong.store is None
    right = PlaceIndex(store.dim, IndexSpec("flat"), model=a)
    right.add(store)
    assert right.query(images[5], k=1)[0][0] == images[5]
    right.save(tmp_path / "map")
    with pytest.raises(StoreMismatchError, match=rf"the index in .*map .*config hash {want}.*config hash {got}"):
        PlaceIndex.load(tmp_path / "map", model=b)
    again = PlaceIndex.load(tmp_path / "map", model=TinyEncoder(seed=0))
    assert again.query(images[5], k=1)[0][0] == images[5]
    assert PlaceIndex.load(tmp_path / "map").ntotal == len(images)  # no model: nothing to compare


def test_a_store_extracted_with_longer_side_resizing_accepts_its_own_model(images, tmp_path):
    model = TinyEncoder()
    store = extract_to_store(model, images, tmp_path / "store", chunk_size=8, device="cpu", progress=False,
                             resize="longer_side", longer_side=20)
    index = PlaceIndex(store.dim, IndexSpec("flat"), model=model)
    index.add(store)
    assert index.ntotal == len(images) and index.store["longer_side"] == 20


def _with_meta(folder: Path, **changes) -> None:
    """The store's schema metadata rewritten as a new Lance commit (a crafted store of real bytes)."""
    import json

    ds = lance.dataset(str(folder))
    meta = json.loads(ds.schema.metadata[b"clusvpr_map"])
    ds.replace_schema_metadata({"clusvpr_map": json.dumps({**meta, **changes})})


@pytest.mark.parametrize("changes, message", [
    ({"dim": 16}, r"metadata dim 16 but its descriptor column holds 32-d rows"),
    ({"chunk_size": 0}, r"metadata chunk_size must be an integer >= 1, got 0"),
    ({"count": "x"}, r"metadata count must be an integer >= 1, got 'x'"),
])
def test_store_metadata_is_checked_against_its_schema_before_anything_is_sized(images, tmp_path, changes, message):
    """metadata dim 16 over 32-d lists built an index of 2x the rows; chunk_size 0 divided by zero."""
    extract_to_store(TinyEncoder(), images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    _with_meta(tmp_path / "store", **changes)
    with pytest.raises(StoreMismatchError, match=message + r".*delete the store folder and extract again"):
        open_store(tmp_path / "store")


def test_store_metadata_nested_too_deep_or_with_huge_numbers_is_a_named_error(images, tmp_path):
    """The store's clusvpr_map metadata is parsed within limits: 10^5 nested lists (a bare RecursionError from the
    standard parser) or a 5000-digit number are StoreMismatchError naming the store and the fix."""
    extract_to_store(TinyEncoder(), images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    ds = lance.dataset(str(tmp_path / "store"))
    for crafted in ("[" * 100_000 + "]" * 100_000, '{"count": ' + "9" * 5000 + "}"):
        ds.replace_schema_metadata({"clusvpr_map": crafted})
        with pytest.raises(StoreMismatchError, match=r"metadata is not a JSON object.*delete the store folder"):
            open_store(tmp_path / "store")


def test_a_killed_creators_staging_folder_is_removed_and_a_live_one_kept(images, tmp_path):
    """A creator killed between building its staged store and renaming it leaves `.store.<random>.tmp`: the next
    create removes it once it is older than a create can take, and keeps a fresh one (another creator's, live)."""
    import time

    from registry._util.atomic import staging_dir
    from registry.evaluation import store as store_module

    stale, live = staging_dir(tmp_path / "store"), staging_dir(tmp_path / "store")
    old = time.time() - store_module.STALE_STAGE_S - 5
    os.utime(stale, (old, old))
    extract_to_store(TinyEncoder(), images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    assert not stale.exists() and live.is_dir()
    assert open_store(tmp_path / "store").complete


COUNT_SETUP = """
import sys
from pathlib import Path
from registry.evaluation import extract_to_store, open_store, StoreMismatchError
from tiny_encoder import TinyEncoder
images = sorted(str(p) for p in Path(sys.argv[1]).glob("*.png"))
warm = open_store(sys.argv[3])  # Lance's threads started before the cap
"""


def test_a_store_metadata_count_far_beyond_its_rows_is_refused_or_opened_without_sizing_from_it(images, tmp_path):
    """Metadata count 1.5e8 in a store of 18 rows (a real Lance commit; before: 3.0 GB and 9.5 s in open_store),
    loaded in a child whose address space may grow by 512 MiB: opened for its images or extracted into, it is
    StoreMismatchError naming both counts; opened alone, an incomplete store of 18 rows, nothing sized from the
    count."""
    from memory_cap import run_capped

    model = TinyEncoder()
    extract_to_store(model, images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    extract_to_store(model, images, tmp_path / "warm", chunk_size=8, device="cpu", progress=False)
    _with_meta(tmp_path / "store", count=150_000_000)
    folders = [str(tmp_path / name) for name in ("images", "store", "warm")]
    argv = f"import sys\nsys.argv[1:] = {folders!r}\n"
    for run in ("open_store(sys.argv[2], images, 'x')",
                "extract_to_store(TinyEncoder(), images, sys.argv[2], chunk_size=8, device='cpu', progress=False)"):
        got = run_capped(argv + COUNT_SETUP, run, 512 << 20, paths=[HERE])
        assert got["raised"] == "StoreMismatchError", got
        assert "holds 150000000 other images than the 18 asked for (its metadata count" in got["message"]
    got = run_capped(argv + COUNT_SETUP, "s = open_store(sys.argv[2])\nresult = (s.complete, s.count)\n"
                     "s.descriptors", 512 << 20, paths=[HERE])
    assert got["raised"] == "ValueError" and "is incomplete (18 of 150000000 rows)" in got["message"], got


def test_missing_chunks_of_a_metadata_count_of_10_12_in_chunks_of_1_is_refused_within_a_memory_cap(images, tmp_path):
    """Metadata count 10^12 and chunk_size 1 over 18 rows (a real Lance commit): opened alone, missing_chunks()
    listed 10^12 chunk numbers (the trust sweep's MemoryError); now a StoreMismatchError naming the chunk count, in a
    child whose address space may grow by 512 MiB. A real store's chunks are listed as before."""
    from memory_cap import run_capped

    model = TinyEncoder()
    extract_to_store(model, images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    extract_to_store(model, images[:10], tmp_path / "warm", chunk_size=8, device="cpu", progress=False)
    assert open_store(tmp_path / "store").missing_chunks() == []
    _with_meta(tmp_path / "store", count=10**12, chunk_size=1)
    folders = [str(tmp_path / name) for name in ("images", "store", "warm")]
    got = run_capped(f"import sys\nsys.argv[1:] = {folders!r}\n" + COUNT_SETUP,
                     "result = len(open_store(sys.argv[2]).missing_chunks())", 512 << 20, paths=[HERE])
    assert got["raised"] == "StoreMismatchError", got
    assert "metadata count 1,000,000,000,000 in chunks of 1 is 1,000,000,000,000 chunks, more than the 1,048,576" \
        in got["message"]


def test_a_chunk_size_giving_more_chunks_than_a_store_may_have_is_refused_before_extracting(images, tmp_path,
                                                                                          monkeypatch):
    from registry.evaluation import store_extract

    monkeypatch.setattr(store_extract, "MAX_CHUNKS", 4)
    model = TinyEncoder()
    with pytest.raises(ValueError, match=r"chunk_size 4 cuts 18 images into more than 4 chunks, the most a store may "
                                         r"have: pass a larger chunk_size"):
        extract_to_store(model, images, tmp_path / "store", chunk_size=4, device="cpu", progress=False)
    assert model.calls == 0 and not (tmp_path / "store").exists()
    extract_to_store(model, images, tmp_path / "store", chunk_size=5, device="cpu", progress=False)


def test_a_store_metadata_dim_of_2_31_is_refused_within_a_memory_cap(images, tmp_path):
    """Metadata dim 2^31 over the schema's 32-d lists (a real Lance commit), opened and read in a child whose address
    space may grow by 512 MiB: StoreMismatchError naming both widths, nothing sized from the metadata's dim."""
    from memory_cap import run_capped

    model = TinyEncoder()
    extract_to_store(model, images, tmp_path / "store", chunk_size=8, device="cpu", progress=False)
    extract_to_store(model, images, tmp_path / "warm", chunk_size=8, device="cpu", progress=False)
    _with_meta(tmp_path / "store", dim=2**31)
    folders = [str(tmp_path / name) for name in ("images", "store", "warm")]
    got = run_capped(f"import sys\nsys.argv[1:] = {folders!r}\n" + COUNT_SETUP,
                     "import numpy as np\nnp.asarray(open_store(sys.argv[2]).descriptors)", 512 << 20, paths=[HERE])
    assert got["raised"] == "StoreMismatchError", got
    assert "metadata dim 2147483648 but its descriptor column holds 32-d rows" in got["message"]
