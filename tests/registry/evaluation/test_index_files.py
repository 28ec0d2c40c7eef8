"""PlaceIndex files and inputs tried as a hostile or unlucky user would: bounded loads, consistency checks, NaN
refused, errors that name expected and given, k beyond the map padded, saves that never destroy the earlier index."""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from registry.evaluation import IndexSpec, PlaceIndex
from registry.evaluation.index import IndexFileError, normalise

faiss = pytest.importorskip("faiss")
REPO = Path(__file__).resolve().parents[3]


def _env() -> dict:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)


def unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return normalise(np.random.default_rng(seed).standard_normal((n, dim)))


def saved(tmp_path: Path, kind: str = "flat", n: int = 50, **options) -> Path:
    index = PlaceIndex(16, IndexSpec(kind, **options))
    index.add(unit(n))
    return index.save(tmp_path / kind)


def write_faiss(folder: Path, data: bytes) -> None:
    """index.faiss replaced by `data`, and places.json's sha256 recomputed to match (a crafted, not a damaged file)."""
    (folder / "index.faiss").write_bytes(data)
    meta = json.loads((folder / "places.json").read_text())
    meta["index_sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "places.json").write_text(json.dumps(meta))


def test_a_faiss_file_declaring_more_codes_than_it_holds_fails_fast_with_small_memory(tmp_path):
    """A 3 KB flat index whose header declares 2^31 floats (8.6 GB): refused, and the loading process never grows
    past a few hundred MB (peak RSS measured in a fresh interpreter)."""
    folder = saved(tmp_path, "flat", n=40)
    data = bytearray((folder / "index.faiss").read_bytes())
    assert data[:4] == b"IxFI" and struct.unpack_from("<Q", data, 37)[0] == 40 * 16  # the codes' declared size
    struct.pack_into("<Q", data, 37, 2**31)
    write_faiss(folder, bytes(data))
    assert len(data) < 3000
    script = ("import resource, sys\nfrom registry.evaluation import PlaceIndex\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    PlaceIndex.load(sys.argv[1])\nexcept ValueError as err:\n    print('refused:', err)\n"
              "print('grew_mb', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    run = subprocess.run([sys.executable, "-c", script, str(folder)], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused:" in run.stdout and "declares more data than its" in run.stdout and "index.faiss" in run.stdout
    grew = float(run.stdout.split("grew_mb")[1])
    assert grew < 200, run.stdout  # the 8.6 GB were never allocated here


def test_a_file_faiss_cannot_read_is_named(tmp_path):
    folder = saved(tmp_path)
    write_faiss(folder, b"XXXX" + bytes(200))
    with pytest.raises(IndexFileError, match=r"index\.faiss is not a readable faiss index.*not recognized"):
        PlaceIndex.load(folder)


def test_places_json_must_describe_the_index_in_the_file(tmp_path):
    folder = saved(tmp_path, "hnsw", hnsw_m=8)
    meta = json.loads((folder / "places.json").read_text())

    def load_with(**changes):
        (folder / "places.json").write_text(json.dumps({**meta, **changes}))
        return PlaceIndex.load(folder)

    with pytest.raises(IndexFileError, match="holds 50 vectors but places.json lists 10 places"):
        load_with(places=meta["places"][:10])
    with pytest.raises(IndexFileError, match=r"holds a IndexHNSWFlat index, but places.json describes a 'ivfpq'"):
        load_with(spec={**meta["spec"], "kind": "ivfpq"})
    with pytest.raises(IndexFileError, match=r"ef_search must be in 1\.\.65536, got -1"):
        load_with(spec={**meta["spec"], "ef_search": -1})
    with pytest.raises(IndexFileError, match=r"unknown spec fields \['efsearch'\]"):
        load_with(spec={**meta["spec"], "efsearch": 5})
    with pytest.raises(IndexFileError, match="holds 16-d vectors, places.json says dim 32"):
        load_with(dim=32)
    with pytest.raises(IndexFileError, match="format 'abc'"):
        load_with(format="abc")
    assert load_with().ntotal == 50


def test_nan_or_inf_descriptors_are_refused_when_added_and_nothing_is_added():
    index = PlaceIndex(16, IndexSpec("hnsw", hnsw_m=8))
    index.add(unit(30))
    bad = unit(20000, seed=1)
    bad[17000, 3] = np.nan
    bad[17001, 0] = np.inf
    with pytest.raises(ValueError, match=r"descriptors hold NaN or Inf \(rows \[17000, 17001\]\); nothing was added"):
        index.add(bad)
    assert index.ntotal == 30 and len(index.places) == 30


def test_nan_queries_wrong_dims_and_bad_k_are_value_errors_naming_expected_and_given():
    index = PlaceIndex(16, IndexSpec("flat"))
    index.add(unit(30))
    q = unit(2, seed=3)
    q[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"query descriptors hold NaN or Inf \(rows \[1\]\)"):
        index.search(q, 3)
    with pytest.raises(ValueError, match=r"queries must be 16-d \(this index's dim\), got shape \(1, 12\)"):
        index.search(unit(1, dim=12), 3)
    for k in (0, -2, 2.5):
        with pytest.raises(ValueError, match=rf"k must be an integer in 1\.\.1048576 .*, got {k}"):
            index.search(unit(1), k)
    with pytest.raises(ValueError, match="PlaceIndex dim must be an integer >= 1, got 0"):
        PlaceIndex(0)


@pytest.mark.parametrize("kind,options", [("flat", {}), ("hnsw", {"hnsw_m": 8}),
                                          ("ivfpq", {"nlist": 1, "m": 4, "nbits": 4, "refine": 4})])
def test_k_larger_than_the_map_pads_with_minus_one_to_n_by_k(kind, options):
    index = PlaceIndex(16, IndexSpec(kind, **options))
    index.add(unit(20))
    dists, ids = index.search(unit(3, seed=5), 25)
    assert ids.shape == dists.shape == (3, 25)
    assert np.all(ids[:, 20:] == -1) and np.all(np.isinf(dists[:, 20:]))
    assert all(sorted(row[:20]) == list(range(20)) for row in ids)


def test_a_saved_index_folder_gets_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        folder = saved(tmp_path)
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o750
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"index.faiss": 0o640,
                                                                              "places.json": 0o640}


def test_save_never_replaces_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    index = PlaceIndex(16)
    index.add(unit(5))
    with pytest.raises(FileExistsError, match="is not a saved PlaceIndex folder"):
        index.save(tmp_path / "photos")
    assert (tmp_path / "photos" / "a.jpg").read_bytes() == b"x"


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@pytest.mark.parametrize("extra", ["images", "notes", "json", "no-faiss", "fake-faiss"])
def test_save_never_replaces_a_folder_that_only_holds_a_file_named_places_json(tmp_path, extra):
    """A user's folder with a places.json of their own (plus images/, notes, or index.faiss and JSON that is not an
    index description): FileExistsError, every file left byte for byte; a real saved index is still replaced."""
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "0001.jpg").write_bytes(b"\xff\xd8 a photo")
    (folder / "places.json").write_text('{"format": 2, "spec": {}, "places": []}')
    if extra == "notes":
        (folder / "images" / "0001.jpg").unlink()
        (folder / "images").rmdir()
        (folder / "notes.txt").write_text("survey of 2026-11-03")
    elif extra in ("json", "fake-faiss"):
        (folder / "images" / "0001.jpg").unlink()
        (folder / "images").rmdir()
        (folder / "places.json").write_text('{"my": "places", "format": 2}')
        (folder / "index.faiss").write_bytes(b"my own file")
    elif extra == "no-faiss":
        (folder / "images" / "0001.jpg").unlink()
        (folder / "images").rmdir()
    before = _tree(folder)
    index = PlaceIndex(16)
    index.add(unit(5))
    with pytest.raises(FileExistsError, match=r"is not a saved PlaceIndex folder .*nothing was deleted"):
        index.save(folder)
    assert _tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left
    real = saved(tmp_path, "hnsw", n=30)
    index.save(real)  # an index folder is replaced as a whole
    assert PlaceIndex.load(real).ntotal == 5


SAVE_UNDER_LIMIT = """
import resource, signal, sys
import numpy as np
from registry.evaluation import IndexSpec, PlaceIndex
from registry.evaluation.index import normalise
folder = sys.argv[1]
rng = np.random.default_rng(0)
first = PlaceIndex(32, IndexSpec("ivfpq", nlist=4, m=8, nbits=4, refine=4))
first.add(normalise(rng.standard_normal((300, 32))))
first.save(folder)
second = PlaceIndex(32, IndexSpec("ivfpq", nlist=4, m=8, nbits=4, refine=4))
second.add(normalise(rng.standard_normal((20000, 32))))  # 1.3 MB of float16 vectors, more than the limit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    second.save(folder)
except OSError as err:
    print("OSError:", err.errno, err)
"""


def test_a_real_write_failure_during_save_leaves_the_earlier_index_intact(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past 200 kB (EFBIG), as a full disk would: the save fails with an
    OSError naming the folder, the earlier index loads and answers as before, and no temporary folder is left."""
    folder = tmp_path / "map"
    run = subprocess.run([sys.executable, "-c", SAVE_UNDER_LIMIT, str(folder)], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("OSError: 27 [Errno 27]") and "Errno None" not in run.stdout, run.stdout
    assert f"could not save the PlaceIndex to {folder}: the file would exceed the file-size limit" in run.stdout
    assert "the earlier index there, if any, is unchanged" in run.stdout
    assert f"free space in {tmp_path} (or raise the limit) and save again" in run.stdout
    again = PlaceIndex.load(folder)
    assert again.ntotal == 300 and again.disk_bytes() == 300 * 32 * 2
    rng = np.random.default_rng(0)
    first = normalise(rng.standard_normal((300, 32)))
    assert np.array_equal(again.search(first[:5], 1)[1][:, 0], np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map"]


def test_a_flipped_byte_in_index_faiss_is_refused_by_its_recorded_sha256(tmp_path):
    folder = saved(tmp_path, "hnsw", n=60, hnsw_m=8)
    meta = json.loads((folder / "places.json").read_text())
    data = bytearray((folder / "index.faiss").read_bytes())
    assert meta["index_sha256"] == hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0x10
    (folder / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=r"index\.faiss does not match the sha256 in places\.json"):
        PlaceIndex.load(folder)
    assert PlaceIndex.load(folder, verify=False).ntotal == 60  # verify=False: the caller vouches for the file


def _ivfpq(tmp_path: Path) -> Path:
    index = PlaceIndex(16, IndexSpec("ivfpq", nlist=8, m=4, nbits=4, nprobe=8))
    index.add(unit(400))
    return index.save(tmp_path / "ivf")


def test_places_json_spec_fields_are_compared_with_the_faiss_file(tmp_path):
    """An edited nlist (2 for a file of 8 lists) would cap nprobe at 2: refused; m and nbits likewise."""
    folder = _ivfpq(tmp_path)
    meta = json.loads((folder / "places.json").read_text())
    for name, value in (("nlist", 2), ("m", 2), ("nbits", 8)):
        (folder / "places.json").write_text(json.dumps({**meta, "spec": {**meta["spec"], name: value}}))
        with pytest.raises(IndexFileError, match=rf"IVF-PQ index with {name}=\d+, places.json says {name}={value}"):
            PlaceIndex.load(folder)
    (folder / "places.json").write_text(json.dumps(meta))
    assert faiss.extract_index_ivf(PlaceIndex.load(folder).faiss_index).nprobe == 8


def test_crafted_ivf_list_ids_are_refused_not_returned(tmp_path):
    """An IVF list entry whose id is -7 (sha256 recomputed): refused on load, never returned by a search."""
    folder = _ivfpq(tmp_path)
    index = faiss.read_index(str(folder / "index.faiss"))
    ivf = faiss.extract_index_ivf(index)
    lst = next(i for i in range(ivf.nlist) if ivf.invlists.list_size(i))
    code = faiss.rev_swig_ptr(ivf.invlists.get_single_code(lst, 0), ivf.code_size)
    ivf.invlists.update_entry(lst, 0, -7, faiss.swig_ptr(np.array(code, dtype=np.uint8)))
    writer = faiss.VectorIOWriter()
    faiss.write_index(index, writer)
    write_faiss(folder, faiss.vector_to_array(writer.data).tobytes())
    with pytest.raises(IndexFileError, match=r"IVF list ids outside 0\.\.399 \(e\.g\. \[-7\]\)"):
        PlaceIndex.load(folder)


def test_a_nan_row_in_vectors_f16_with_a_recomputed_sha256_is_refused(tmp_path):
    folder = saved(tmp_path, "hnsw", n=40, hnsw_m=8, refine=4)
    data = bytearray((folder / "vectors.f16").read_bytes())
    data[16 * 2 * 7 : 16 * 2 * 7 + 2] = np.float16(np.nan).tobytes()  # row 7, first value
    (folder / "vectors.f16").write_bytes(bytes(data))
    meta = json.loads((folder / "places.json").read_text())
    meta["vectors"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (folder / "places.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=r"vectors\.f16 holds NaN or Inf values"):
        PlaceIndex.load(folder)


@pytest.mark.parametrize("field, value, allowed", [
    ("ef_search", 2_000_000_000, "1..65536"), ("refine", 10**9, "1..1024"), ("nprobe", 10**9, "1..1048576"),
    ("hnsw_m", 3_000_000_000, "2..512"), ("hnsw_m", 50_000_000, "2..512"), ("ef_construction", 10**8, "1..65536")])
def test_search_parameters_beyond_their_range_are_refused_before_allocating(tmp_path, field, value, allowed):
    """From the caller (IndexSpec, set_search_params) and from places.json: ValueError / IndexFileError with the
    valid range, before faiss sizes a beam or link table from it (--ef-search 2e9 reached 16.5 GB)."""
    kind = "ivfpq" if field == "nprobe" else "hnsw"
    with pytest.raises(ValueError, match=rf"IndexSpec {field} must be in {allowed}, got {value}"):
        IndexSpec(kind, **{field: value})
    folder = saved(tmp_path, "hnsw", n=30, hnsw_m=8, refine=2) if kind == "hnsw" else _ivfpq(tmp_path)
    index = PlaceIndex.load(folder)
    if field in ("ef_search", "refine", "nprobe"):
        with pytest.raises(ValueError, match=rf"{field} must be in {allowed}"):
            index.set_search_params(**{field: value})
    meta = json.loads((folder / "places.json").read_text())
    (folder / "places.json").write_text(json.dumps({**meta, "spec": {**meta["spec"], field: value}}))
    with pytest.raises(IndexFileError, match=rf"places\.json: IndexSpec {field} must be in {allowed}"):
        PlaceIndex.load(folder)
    assert IndexSpec("hnsw", ef_search=1024, hnsw_m=64, refine=32).ef_search == 1024  # documented settings


@pytest.mark.parametrize("store, message", [
    ("x", r"field 'store' must be null or an object .*got str"),
    ({}, r"field 'store\.path' must be a string, got None"),
    ({"path": 5}, r"field 'store\.path' must be a string, got 5"),
    ({"path": "/m", "store_id": "a", "version": "7", "rows": 1, "config_hash": "h"},
     r"field 'store\.version' must be an integer, got '7'"),
])
def test_a_places_json_store_field_of_the_wrong_type_is_a_named_error(tmp_path, store, message):
    folder = saved(tmp_path)
    meta = json.loads((folder / "places.json").read_text())
    (folder / "places.json").write_text(json.dumps({**meta, "store": store}))
    with pytest.raises(IndexFileError, match=r"places\.json: " + message):
        PlaceIndex.load(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace('"places": [', '"places": [' + "[" * 50000 + "]" * 50000 + ", ", 1),
     r"nests 5000\d levels of lists and objects, more than the 32"),
    (lambda text: text.replace('"dim": 16', '"dim": ' + "7" * 5000, 1), r"holds a number of 5000 characters"),
    (lambda text: text.encode() + b"\xff\xfe", r"is not UTF-8 text"),
    (lambda text: text[: len(text) // 2], r"is not valid JSON"),
])
def test_places_json_is_read_by_the_bounded_json_reader_naming_the_file(tmp_path, edit, message):
    """Before: a bare RecursionError (deep nesting), ValueError (int() of 5000 digits) or UnicodeDecodeError."""
    folder = saved(tmp_path)
    text = edit((folder / "places.json").read_text())
    (folder / "places.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(IndexFileError, match=re.escape(str(folder / "places.json")) + ".* " + message):
        PlaceIndex.load(folder)
    other = PlaceIndex(16, IndexSpec("flat"))
    other.add(unit(5))
    with pytest.raises(FileExistsError, match="not a saved PlaceIndex folder"):  # nor is it replaced by a save
        other.save(folder)


def test_faiss_writing_to_a_full_disk_is_reported_as_a_full_disk_with_its_errno(tmp_path):
    """faiss writing to /dev/full (the kernel's ENOSPC) reports a RuntimeError whose text holds the system's reason;
    the save's error carries errno 28 and says the disk is full, where it said `errno None`."""
    import errno

    import faiss

    from registry._util.atomic import errno_of
    from registry.evaluation.index_files import _save_failure

    index = faiss.IndexFlatL2(8)
    index.add(unit(10000, 8))
    with pytest.raises(RuntimeError) as raised:
        faiss.write_index(index, "/dev/full")
    assert errno_of(raised.value) == errno.ENOSPC
    err = _save_failure(OSError(errno_of(raised.value), "faiss could not write index.faiss"), tmp_path / "map")
    assert err.errno == errno.ENOSPC
    assert str(err).startswith(f"[Errno 28] could not save the PlaceIndex to {tmp_path / 'map'}: the disk is full")
    assert f"free space in {tmp_path} (or raise the limit) and save again" in str(err)


CAPPED_LOAD = """
import numpy as np
from registry.evaluation import PlaceIndex
from registry.evaluation.index import IndexFileError
PlaceIndex.load(WARM).search(np.ones((1, 16), dtype=np.float32), 1)  # faiss and its threads warmed before the cap
"""


@pytest.mark.parametrize("kind, field, value", [
    ("hnsw", "ef_search", 2_000_000_000), ("hnsw", "refine", 10**9), ("hnsw", "hnsw_m", 3_000_000_000),
    ("ivfpq", "nprobe", 10**9), ("ivfpq", "nlist", 10**9), ("hnsw", "dim", 2**31)])
def test_a_crafted_places_json_is_refused_within_a_memory_cap(tmp_path, kind, field, value):
    """Loading and searching a saved index whose places.json was edited (ef_search 2e9 reached 16.5 GB before its
    bound), in a fresh process whose address space may grow by 1.5 GiB past its start: IndexFileError naming
    places.json, never MemoryError or a kill."""
    from memory_cap import run_capped

    warm = saved(tmp_path / "warm", "flat", n=10)
    folder = saved(tmp_path, "hnsw", n=30, hnsw_m=8, refine=2) if kind == "hnsw" else _ivfpq(tmp_path)
    meta = json.loads((folder / "places.json").read_text())
    if field == "dim":
        meta["dim"] = value
    else:
        meta["spec"][field] = value
    (folder / "places.json").write_text(json.dumps(meta))
    got = run_capped(f"WARM = {str(warm)!r}\n" + CAPPED_LOAD,
                     f"PlaceIndex.load({str(folder)!r}).search(np.ones((1, 16), dtype=np.float32), 5)", 3 << 29)
    assert got["raised"] == "IndexFileError" and "places.json" in got["message"], got


def _edit_places(folder: Path, edit) -> None:
    meta = json.loads((folder / "places.json").read_text())
    edit(meta)
    (folder / "places.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["spec"].pop("refine"), r"its spec lacks \['refine'\], which every save of format 2 records"),
    (lambda m: m["spec"].pop("kind"), r"its spec lacks \['kind'\]"),
    (lambda m: m["spec"].update(ef_search=None), r"IndexSpec ef_search must be an integer, got None"),
    (lambda m: m["spec"].update(nprobe=None), r"IndexSpec nprobe must be an integer, got None"),
    (lambda m: m["places"].__setitem__(0, {}), r"place ids must be integers or strings .*found \['dict'\]"),
    (lambda m: m["places"].__setitem__(3, float("inf")), r"place ids must be integers or strings .*found \['float'\]"),
    (lambda m: m["places"].__setitem__(1, None), r"found \['NoneType'\]"),
])
def test_a_places_json_lacking_a_spec_field_or_holding_odd_place_ids_is_a_named_error(tmp_path, edit, message):
    """The trust sweep's cases: without `refine` an HNSW index with a disk refine loaded as one without re-ranking
    (other results, no error); a place id {} or Infinity was served as a place; `ef_search: null` reached faiss as a
    TypeError."""
    folder = saved(tmp_path, "hnsw", hnsw_m=8, refine=2, refine_from="disk")
    before = PlaceIndex.load(folder).search(unit(3, seed=5), 4)
    _edit_places(folder, edit)
    with pytest.raises(IndexFileError, match=re.escape(str(folder / "places.json")) + ".*" + message):
        PlaceIndex.load(folder)
    assert before[1].shape == (3, 4)


@pytest.mark.parametrize("k", [10**9, 2**62, (1 << 20) + 1])
def test_a_search_k_beyond_its_range_is_refused_before_the_results_are_allocated(tmp_path, k):
    """k = 10^9 allocated 3.7 GB of padding for one query (MemoryError); 2^62 raised numpy's 'array is too big'."""
    index = PlaceIndex.load(saved(tmp_path))
    with pytest.raises(ValueError, match=rf"k must be an integer in 1\.\.1048576 .*got {k}"):
        index.search(unit(1), k)
    assert index.search(unit(1), 60)[1].shape == (1, 60)  # more than its 50 rows: padded, as documented
