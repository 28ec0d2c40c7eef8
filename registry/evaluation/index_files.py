"""A saved PlaceIndex folder: index.faiss and places.json (and, for a disk refine, vectors.f16), written as a whole
through registry._util.atomic's folder writer and read back checked before and after faiss reads the index."""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .._util.atomic import errno_of, staged_folder, write_failure
from .._util.files import sha256_file
from .._util.jsonio import read_json
from .faiss_build import _innermost, keep_projection_only
from .index_spec import AUTO, IndexSpec

try:
    import faiss
except ImportError:  # saving and loading an index needs faiss
    faiss = None

log = logging.getLogger(__name__)

FORMAT = 2  # places.json format: 2 adds the metric change (L2 for ivfpq / hnsw), refine and the disk vectors
META, INDEX = "places.json", "index.faiss"
# the spec fields every save of format 2 writes (IndexSpec's fields then)
_SAVED_SPEC_FIELDS = frozenset({"kind", "pca_dim", "nlist", "m", "nbits", "nprobe", "hnsw_m", "ef_construction",
                                "ef_search", "opq", "refine", "refine_from"})
_META_LIMIT = 1 << 30  # places.json holds one id per place: a few hundred MB for millions of places


class IndexFileError(ValueError):
    """A saved PlaceIndex folder that cannot be trusted: malformed, inconsistent, or another index than it says."""


def write_folder(folder: Path, index, meta: Dict[str, Any], vectors: Optional[Tuple[str, Path]] = None) -> None:
    """Write index.faiss, places.json (`meta` with the format and the spec as a dict) and `vectors` ((file name,
    source path) copied in) to `folder` as a whole, through registry._util.atomic's one folder writer: staged beside it,
    fsynced, then renamed over it, so a failed save leaves the earlier index there intact. The folder gets the
    user's umask."""
    _check_replaceable(folder)
    try:
        with staged_folder(folder) as stage:
            try:
                faiss.write_index(index, str(stage / INDEX))
            except RuntimeError as err:  # faiss reports a failed fwrite as a RuntimeError naming the system's reason
                raise OSError(errno_of(err), f"faiss could not write {INDEX}: {_faiss_reason(err)}") from None
            if vectors is not None:
                shutil.copyfile(vectors[1], stage / vectors[0])
            meta = {**meta, "index_sha256": sha256_file(stage / INDEX)}
            (stage / META).write_text(json.dumps({"format": FORMAT, **meta, "spec": asdict(meta["spec"])}))
    except OSError as err:
        raise _save_failure(err, folder) from err


def _save_failure(err: OSError, folder: Path) -> OSError:
    """An OSError of the failed write's errno naming the folder, what went wrong in words and what to do."""
    code = errno_of(err)
    why = write_failure(OSError(code, "")) if code is not None else None
    detail = err.strerror if isinstance(err.strerror, str) and err.errno is not None else str(err)
    fix = (f"free space in {folder.parent} (or raise the limit) and save again" if why else "fix the cause and save "
           "again")
    text = (f"could not save the PlaceIndex to {folder}: {why or 'the write failed'} ({detail}); the earlier index "
            f"there, if any, is unchanged and no partial folder is left: {fix}")
    return OSError(code, text) if code is not None else OSError(text)


SAVED_FILES = (META, INDEX, "vectors.f16")  # everything a saved folder may hold


def _check_replaceable(folder: Path) -> None:
    """Refuse (FileExistsError) to replace `folder` unless it is absent, empty, or a saved PlaceIndex: only the files
    a save writes (plain files, no folders or links), places.json of a known format and index.faiss among them. A
    folder that merely holds a file named places.json is the user's, and nothing in it is touched."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder: pick a new or empty folder for the PlaceIndex")
    entries = list(folder.iterdir())
    if not entries:
        return
    names = {p.name for p in entries}
    foreign = sorted(p.name for p in entries if p.name not in SAVED_FILES or p.is_symlink() or not p.is_file())
    problem = None
    if foreign:
        problem = f"it holds {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}, which a save never writes"
    elif not {META, INDEX} <= names:
        problem = f"it has no {INDEX if META in names else META}"
    else:
        try:
            meta = read_json(folder / META, max_bytes=_META_LIMIT)
        except (OSError, ValueError):
            meta = None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if not (isinstance(fmt, int) and not isinstance(fmt, bool) and 1 <= fmt <= FORMAT
                and isinstance(meta.get("spec"), dict) and isinstance(meta.get("places"), list)):
            problem = f"its {META} is not a PlaceIndex description of formats 1..{FORMAT}"
    if problem:
        raise FileExistsError(f"{folder} exists and is not a saved PlaceIndex folder ({problem}): nothing was "
                              "deleted; pick a new or empty folder, since a save replaces its folder as a whole")


def read_folder(folder: Path, verify: bool = True) -> Tuple[Dict[str, Any], Any]:
    """(places.json checked, with `spec` an IndexSpec; the faiss index checked against it) of a saved folder.
    `verify`: index.faiss is checked against the sha256 places.json records (saves that record one)."""
    meta_path, index_path = folder / META, folder / INDEX
    for path in (meta_path, index_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a saved PlaceIndex: {path.name} is missing")
    meta = _read_meta(meta_path)
    want = meta.get("index_sha256")
    if want is not None and not (isinstance(want, str) and len(want) == 64):
        raise IndexFileError(f"{meta_path}: index_sha256 must be a 64-character hex string, got {want!r}")
    if verify and want is not None and sha256_file(index_path) != want:
        raise IndexFileError(f"{index_path} does not match the sha256 in {META}: it was modified or damaged after "
                             "saving; save the index again from its descriptors or map store")
    index = _read_index_bounded(index_path)
    _check_index(index, meta["spec"], meta["dim"], len(meta["places"]), index_path, meta.get("format", 1))
    keep_projection_only(index)  # an index saved with a full PCAMatrix loads slim
    return meta, index


def _read_meta(path: Path) -> Dict[str, Any]:
    """places.json parsed and checked: its fields, their types and the spec's ranges."""
    meta = read_json(path, max_bytes=_META_LIMIT, error=IndexFileError, fix="save the index again")
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict) or not isinstance(meta.get("places"), list):
        raise IndexFileError(f"{path} is not a PlaceIndex description: it needs 'dim', 'spec' and 'places'")
    fmt = meta.get("format", 1)
    if not isinstance(fmt, int) or not 1 <= fmt <= FORMAT:
        raise IndexFileError(f"{path} has format {fmt!r}; this version reads formats 1..{FORMAT}: upgrade the package")
    dim = meta.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise IndexFileError(f"{path}: dim must be an integer >= 1, got {dim!r}")
    known = {f.name for f in fields(IndexSpec)}
    unknown = sorted(set(meta["spec"]) - known)
    if unknown:
        raise IndexFileError(f"{path}: unknown spec fields {unknown}; valid: {sorted(known)}")
    lacking = sorted(_SAVED_SPEC_FIELDS - set(meta["spec"])) if fmt >= 2 else []
    if lacking:  # a default in their place would search another index than the one saved (refine: no re-ranking)
        raise IndexFileError(f"{path}: its spec lacks {lacking}, which every save of format {fmt} records; save the "
                             "index again")
    kinds = {type(p) for p in meta["places"]}
    if not kinds <= {int, str}:
        odd = sorted(k.__name__ for k in kinds - {int, str})
        raise IndexFileError(f"{path}: place ids must be integers or strings (as save writes them), found {odd}; "
                             "save the index again")
    try:
        meta["spec"] = IndexSpec(**meta["spec"])
    except (TypeError, ValueError) as err:
        raise IndexFileError(f"{path}: {err}") from None
    if meta["spec"].kind == AUTO:
        raise IndexFileError(f"{path}: a saved index records the kind 'auto' chose, not 'auto'")
    _check_store_field(meta.get("store"), path)
    return meta


_STORE_FIELDS = {"path": str, "store_id": str, "version": int, "rows": int, "config_hash": str}


def _check_store_field(store: Any, path: Path) -> None:
    """places.json's `store`: null (built from arrays) or the reference MapStore.reference wrote."""
    if store is None:
        return
    if not isinstance(store, dict):
        raise IndexFileError(f"{path}: field 'store' must be null or an object with {sorted(_STORE_FIELDS)}, got "
                             f"{type(store).__name__}: save the index again")
    for name, kind in _STORE_FIELDS.items():
        value = store.get(name)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise IndexFileError(f"{path}: field 'store.{name}' must be {'a string' if kind is str else 'an integer'}"
                                 f", got {repr(value)[:40]}: save the index again")


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _read_index_bounded(path: Path):
    """faiss.read_index, after a trial read in a forked child whose address space is capped at what the file's
    length can hold: a file that declares more codes than it has (a hostile or corrupt header) fails there, before
    this process allocates anything. faiss's own errors come back with the file named."""
    size = path.stat().st_size
    try:
        import resource
    except ImportError:  # no fork / rlimit (Windows): faiss's own checks only
        resource = None
    if resource is not None and hasattr(os, "fork") and os.path.exists("/proc/self/status"):
        _trial_read(path, size, resource)
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise IndexFileError(f"{path} is not a readable faiss index: {_faiss_reason(err)}") from None


def _faiss_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    reason = next((line for line in text if "Error" in line or "not recognized" in line or "error" in line), "")
    return (reason or (text[0] if text else type(err).__name__)).strip()


def _trial_read(path: Path, size: int, resource) -> None:
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fork of a threaded process (torch, Lance): the child only reads a file
        pid = os.fork()
    if pid == 0:  # child: cap the address space, read, report, exit without running any parent cleanup
        code, message = 0, b""
        try:
            os.close(read_fd)
            limit = _vm_size() + 2 * size + (256 << 20)
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard == resource.RLIM_INFINITY or limit < hard:
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            faiss.read_index(str(path))
        except MemoryError:
            code = 3
        except BaseException as err:  # noqa: BLE001  (reported to the parent)
            code, message = 4, _faiss_reason(err).encode()[-2000:]
        try:
            os.write(write_fd, message)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        message = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 3 or (code == 4 and "bad_alloc" in message):
        raise IndexFileError(f"{path} declares more data than its {size:,} bytes can hold (a corrupt or hostile "
                             "header): refused before reading")
    if code == 4:
        raise IndexFileError(f"{path} is not a readable faiss index: {message}")
    if code != 0:
        log.warning("trial read of %s ended with status %s; reading it directly", path, code)


_KIND_CLASS = {"flat": "IndexFlat", "pca": "IndexFlat", "hnsw": "IndexHNSW", "ivfpq": "IndexIVFPQ"}


def _check_index(index, spec: IndexSpec, dim: int, n_places: int, path: Path, fmt: int) -> None:
    """The index in the file is the one places.json describes: kind, PCA, refine, metric, dim and size."""
    inner = _innermost(index)
    expected = getattr(faiss, _KIND_CLASS[spec.kind])
    if not isinstance(inner, expected):
        raise IndexFileError(f"{path} holds a {type(inner).__name__} index, but places.json describes a "
                             f"{spec.kind!r} index ({_KIND_CLASS[spec.kind]}): the two files are from different saves")
    outer = faiss.downcast_index(index)
    refined = isinstance(outer, faiss.IndexRefine)
    if refined != bool(spec.refine and spec.refine_from != "disk"):
        raise IndexFileError(f"{path} {'has' if refined else 'has no'} in-memory refine, places.json says refine="
                             f"{spec.refine}, refine_from={spec.refine_from!r}: the two files are from different saves")
    base = faiss.downcast_index(outer.base_index) if refined else outer
    has_pca = isinstance(base, faiss.IndexPreTransform)
    if has_pca != bool(spec.pca_dim and spec.pca_dim < dim):
        raise IndexFileError(f"{path} {'has' if has_pca else 'has no'} PCA, places.json says pca_dim={spec.pca_dim}")
    if index.d != dim:
        raise IndexFileError(f"{path} holds {index.d}-d vectors, places.json says dim {dim}")
    if index.ntotal != n_places:
        raise IndexFileError(f"{path} holds {index.ntotal} vectors but places.json lists {n_places} places: the "
                             "two files are from different saves")
    if fmt >= 2 and index.metric_type != spec.metric:
        raise IndexFileError(f"{path} searches with faiss metric {index.metric_type}, {spec.kind!r} needs "
                             f"{spec.metric}: the two files are from different saves")
    if spec.kind == "ivfpq":
        _check_ivf(faiss.extract_index_ivf(inner), spec, path)
    elif spec.kind == "hnsw":
        links = int(inner.hnsw.nb_neighbors(1))
        if links != spec.hnsw_m:
            raise IndexFileError(f"{path} is an HNSW graph of {links} links per node, places.json says hnsw_m="
                                 f"{spec.hnsw_m}: the two files are from different saves")
        _check_ids(faiss.vector_to_array(inner.hnsw.neighbors), index.ntotal, path, "HNSW neighbour")


def _check_ids(ids, ntotal: int, path: Path, what: str) -> None:
    """Every id in `ids` is a row of the index (-1: an empty slot, where `what` allows it)."""
    import numpy as np

    ids = np.asarray(ids)
    low = -1 if what == "HNSW neighbour" else 0
    if len(ids) and (ids.min() < low or ids.max() >= ntotal):
        bad = ids[(ids < low) | (ids >= ntotal)][:3].tolist()
        raise IndexFileError(f"{path} holds {what} ids outside 0..{ntotal - 1} (e.g. {bad}): the file is damaged or "
                             "was not written by this package; save the index again")


def _check_ivf(ivf, spec: IndexSpec, path: Path) -> None:
    """An IVF-PQ file against places.json (nlist, m, nbits: the nprobe searched is capped at nlist) and its lists'
    ids against ntotal."""
    ivf = faiss.downcast_index(ivf)
    pq = ivf.pq
    for name, have in (("nlist", int(ivf.nlist)), ("m", int(pq.M)), ("nbits", int(pq.nbits))):
        if getattr(spec, name) is not None and getattr(spec, name) != have:
            raise IndexFileError(f"{path} is an IVF-PQ index with {name}={have}, places.json says {name}="
                                 f"{getattr(spec, name)}: the two files are from different saves (or places.json "
                                 "was edited); save the index again")
    import numpy as np

    invlists = ivf.invlists
    total = 0
    for list_no in range(ivf.nlist):
        size = int(invlists.list_size(list_no))
        total += size
        if size:
            ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            _check_ids(np.array(ids, copy=True), ivf.ntotal, path, "IVF list")
    if total != ivf.ntotal:
        raise IndexFileError(f"{path}: its IVF lists hold {total} entries for {ivf.ntotal} vectors: the file is "
                             "damaged; save the index again")
