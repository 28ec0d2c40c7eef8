"""The map store: one row per image (descriptor, image path, place id, optional coordinates) in a Lance dataset.

Lance (https://lancedb.github.io/lance/) gives what a map needs from storage: every write is an atomic, versioned
commit (a killed or failed write leaves the last commit as it was), concurrent writers are serialised by its commit
protocol (a store is created by renaming a staged one into place, so of two creators exactly one wins), rows are
read back at random quickly (a PlaceIndex's shortlist), and distributed writers write data fragments that one commit
joins. The dataset's schema metadata records the model's config hash, the input size, the image list's hash and the
type of the place ids (ints come back as ints, anything else as strings). This module reads stores and writes their
commits; store_extract fills them (one committed chunk at a time, resumable, under torchrun too).

A store's integrity: every data file carries the store's id (a file of another store is refused), every data file
matches the sha256 recorded when it was committed (store_checksums: Lance keeps no checksum of its pages, so a
byte flipped inside one is caught there), and a missing, truncated or unreadable data file or manifest is a
StoreDamagedError naming it and the fix (Lance's own errors and panics).

A folder of meta.json + descriptors.npy (a memory-mapped descriptor store) is refused, not converted: a store is
cheap to rebuild; delete the folder and extract again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from .._util.atomic import leftovers, staged_folder
from .._util.jsonio import loads_bounded
from . import store_checksums
from .store_damage import (
    StoreDamagedError,
    check_fragments,
    clear_uncommitted,
    committed,
    diagnose,
    lance_error,
    uncommitted_error,
)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
FORMAT = 2
DEFAULT_CHUNK = 1024
MAX_CHUNKS = 1 << 20  # chunks of one store (its list of missing chunks is ~40 MB at most)
_READ_CHUNK = 16384
EXTRA = "pip install 'clusvpr-zoo[map]'"
INT_PLACES = "int"  # meta["place_type"] of a store whose place ids are integers


class StoreMismatchError(ValueError):
    """The store folder holds descriptors of another model, input size or image list."""


class StoreChangedError(ValueError):
    """The map store an index was built from has moved or changed since."""


def _lance():
    try:
        import lance
        import pyarrow as pa
    except ImportError as err:
        raise ImportError(f"the map store needs Lance (pylance) and pyarrow: {EXTRA}") from err
    return lance, pa


def _images_hash(images: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(images).encode()).hexdigest()


def _schema(dim: int, meta: Dict[str, Any]):
    _, pa = _lance()
    fields = [pa.field("row", pa.int64(), nullable=False), pa.field("image", pa.string()),
              pa.field("place", pa.string()), pa.field("descriptor", pa.list_(pa.float32(), dim)),
              pa.field("x", pa.float64()), pa.field("y", pa.float64())]
    return pa.schema(fields, metadata={b"clusvpr_map": json.dumps(meta).encode()})


def _as_os_error(err: BaseException, folder: Path, what: str) -> OSError:
    code = getattr(err, "errno", None) or next((int(m) for m in re.findall(r"os error (\d+)", str(err))), None)
    return OSError(code, f"could not {what} the map store {folder} ({str(err).splitlines()[0]}); its last commit is "
                         "intact: free space (or fix the cause) and run again to resume")


class _Rows:
    """The store's descriptors as a read-only (N, D) array in image order, read through Lance on demand: slices and
    integer arrays read only those rows; np.asarray reads everything."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, store: "MapStore") -> None:
        self._store = store
        self.shape = (len(store._offsets), store.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, cols = key[0], key[1:]
            return self[rows][(slice(None), *cols)]
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        positions = self._store._offsets[key]
        return self._store._take(np.atleast_1d(positions))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for s in range(0, len(self), _READ_CHUNK):
            out[s : s + _READ_CHUNK] = self[s : s + _READ_CHUNK]
        return out if dtype is None else out.astype(dtype)


class MapStore:
    """An opened map store at one version: `descriptors` (an (N, D) array-like in image order), `images`, `places`,
    `coords`; `complete` once every image's row is committed. Read-only; extract_to_store writes."""

    def __init__(self, folder: PathLike, version: Optional[int] = None, expected_count: Optional[int] = None,
                 verify: bool = True) -> None:
        """`expected_count`: the number of images the caller's store is for; a store whose metadata says otherwise
        is refused before anything is read or sized from that metadata. `verify`: every data file is checked against
        the sha256 recorded when it was committed (read once per process; StoreDamagedError names a file that
        differs)."""
        lance, _ = _lance()
        self.folder = Path(folder)
        if (self.folder / "meta.json").is_file() and (self.folder / "descriptors.npy").exists():
            raise StoreMismatchError(f"{self.folder} is a descriptor store of the earlier memory-mapped format; stores "
                                     "are not converted: delete the folder and extract again (it is cheap to rebuild)")
        if not (self.folder / "_versions").is_dir():
            raise FileNotFoundError(f"{self.folder} is not a map store (no Lance dataset there)")
        if not committed(self.folder):
            raise uncommitted_error(self.folder)
        with self._reading():  # the schema too: Lance decodes it lazily, and a damaged manifest panics there
            self._ds = lance.dataset(str(self.folder), version=version)
            self._schema = self._ds.schema
        raw = (self._schema.metadata or {}).get(b"clusvpr_map")
        if raw is None:
            raise StoreMismatchError(f"{self.folder} is a Lance dataset but not a map store (no clusvpr_map metadata)")
        try:
            self.meta: Dict[str, Any] = loads_bounded(raw, f"map metadata of {self.folder}")
        except ValueError:
            self.meta = None
        self._check_meta()
        if expected_count is not None and self.count != expected_count:
            raise StoreMismatchError(f"map store {self.folder} holds {self.count} other images than the "
                                     f"{expected_count} asked for (its metadata count, checked before anything is "
                                     "read): pass another store folder or delete this one")
        check_fragments(self.folder, self._ds, self.meta.get("store_id"), verify)
        with self._reading():
            rows = self._ds.to_table(columns=["row"]).column("row").to_numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.count):
            raise StoreMismatchError(f"{self.folder} holds row numbers outside 0..{self.count - 1}: not written by "
                                     "this package; delete it and extract again")
        # sized from the rows there, never from the metadata count: a row committed twice (two writers of one
        # model) keeps its first position
        self._rows, self._offsets = np.unique(rows, return_index=True)
        self._columns: Dict[str, list] = {}

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Lance's errors reading this store (a missing, damaged or foreign fragment or manifest) as one
        StoreDamagedError naming the store, the file and the fix."""
        try:
            yield
        except (StoreMismatchError, StoreDamagedError):
            raise
        except BaseException as err:  # noqa: B036  (Lance's panics are BaseExceptions)
            if not lance_error(err):
                raise
            raise diagnose(self.folder, err) from None

    def _check_meta(self) -> None:
        """The clusvpr_map metadata's fields (types, ranges) and its dim against the schema's descriptor width, before
        anything is sized from them."""
        meta, fix = self.meta, "delete the store folder and extract again (it is cheap to rebuild)"
        if not isinstance(meta, dict):
            raise StoreMismatchError(f"{self.folder}: its clusvpr_map metadata is not a JSON object: {fix}")
        for name, low in (("count", 1), ("dim", 1), ("chunk_size", 1)):
            value = meta.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise StoreMismatchError(f"{self.folder}: metadata {name} must be an integer >= {low}, got "
                                         f"{repr(value)[:40]}: {fix}")
        field = self._schema.field("descriptor") if "descriptor" in self._schema.names else None
        width = getattr(field.type, "list_size", None) if field is not None else None
        if width != meta["dim"]:
            raise StoreMismatchError(f"{self.folder}: metadata dim {meta['dim']} but its descriptor column holds "
                                     f"{width}-d rows: {fix}")

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def version(self) -> int:
        return int(self._ds.version)

    @property
    def count(self) -> int:
        """Images the store is for (rows once complete)."""
        return int(self.meta["count"])

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @property
    def num_chunks(self) -> int:
        return -(-self.count // self.chunk_size)

    def missing_chunks(self) -> List[int]:
        """Chunks with a row not yet committed (all of them in a fresh store): a list of num_chunks at most, which
        may not pass MAX_CHUNKS (checked before the list is made: the count and chunk size are the metadata's)."""
        if self.num_chunks > MAX_CHUNKS:
            raise StoreMismatchError(f"{self.folder}: metadata count {self.count:,} in chunks of {self.chunk_size:,} "
                                     f"is {self.num_chunks:,} chunks, more than the {MAX_CHUNKS:,} a store may have "
                                     "(extraction refuses such a chunk size): delete the store folder and extract "
                                     "again")
        chunks, have = np.unique(self._rows // self.chunk_size, return_counts=True)
        full = np.minimum(self.chunk_size, self.count - chunks * self.chunk_size)
        done = set(chunks[have == full].tolist())
        return [c for c in range(self.num_chunks) if c not in done]

    @property
    def complete(self) -> bool:
        return len(self._rows) == self.count

    def _need_complete(self) -> None:
        if not self.complete:
            raise ValueError(f"map store {self.folder} is incomplete ({len(self._rows)} of {self.count} rows): "
                             "run the extraction again to finish it")

    def _take(self, positions: np.ndarray) -> np.ndarray:
        if len(positions) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._reading():
            got = self._ds.take(positions, columns=["descriptor"]).column("descriptor").combine_chunks()
        return got.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim).astype(np.float32, copy=False)

    def _column(self, name: str) -> list:
        self._need_complete()
        if name not in self._columns:
            with self._reading():
                values = self._ds.to_table(columns=[name]).column(name).to_pylist()
            self._columns[name] = [values[i] for i in self._offsets]
        return self._columns[name]

    @property
    def descriptors(self) -> _Rows:
        self._need_complete()
        return _Rows(self)

    @property
    def images(self) -> List[str]:
        return self._column("image")

    @property
    def places(self) -> List[Any]:
        """Place ids (the image paths where none were given): ints when they were given as integers, else strings
        (a store written without a recorded place type gives strings)."""
        if self.meta.get("place_type") == INT_PLACES:
            return [int(p) if p is not None else i for p, i in zip(self._column("place"), self.images)]
        return [p if p is not None else i for p, i in zip(self._column("place"), self.images)]

    @property
    def coords(self) -> Optional[np.ndarray]:
        """(N, 2) coordinates, or None when none were given."""
        if not self.meta.get("coords"):
            return None
        return np.stack([np.asarray(self._column("x"), dtype=np.float64), np.asarray(self._column("y"),
                                                                                     dtype=np.float64)], axis=1)

    def reference(self) -> Dict[str, Any]:
        """What a PlaceIndex records of the store it was built from (checked by check_reference)."""
        self._need_complete()
        out = {"path": str(self.folder.resolve()), "store_id": self.meta["store_id"], "version": self.version,
               "rows": self.count, "config_hash": self.meta["config_hash"], "model": self.meta.get("model")}
        for key in ("resize", "longer_side"):  # what the config hash was computed with (PlaceIndex checks models)
            if self.meta.get(key) is not None:
                out[key] = self.meta[key]
        return out

    def check(self, images: Sequence[str], config_hash: str, what: str) -> None:
        """Refuse this store unless it was made for these images by a model with this config hash."""
        if self.meta.get("config_hash") != config_hash:
            raise StoreMismatchError(
                f"map store {self.folder} was made by {self.meta.get('model')} at input "
                f"{self.meta.get('input_size')} (config hash {str(self.meta.get('config_hash'))[:12]}), not by {what} "
                f"(config hash {config_hash[:12]}): its descriptors cannot be mixed with this model's; pass another "
                "store folder or delete this one")
        if self.meta.get("images_sha256") != _images_hash(images):
            raise StoreMismatchError(
                f"map store {self.folder} holds {self.count} other images than the {len(images)} asked for: pass "
                "another store folder or delete this one")


def open_store(folder: PathLike, images: Optional[Sequence[str]] = None, config_hash: Optional[str] = None,
               what: str = "this model") -> MapStore:
    """A store opened read-only (its latest commit), checked against `images` and `config_hash` when given."""
    store = MapStore(folder, expected_count=None if images is None else len(images))
    if images is not None and config_hash is not None:
        store.check([str(p) for p in images], config_hash, what)
    return store


def check_reference(ref: Dict[str, Any], moved_to: Optional[PathLike], index_folder: PathLike) -> Dict[str, Any]:
    """The store a saved index was built from, still there and unchanged (or at `moved_to`, the same store at the
    same version); StoreChangedError names what moved or changed. Returns the reference, with the new path."""
    path = Path(moved_to) if moved_to is not None else Path(ref["path"])
    if not path.exists():
        raise StoreChangedError(f"the index in {index_folder} was built from the map store {ref['path']}, which is "
                                "gone (moved or deleted): pass its new folder, PlaceIndex.load(..., store=FOLDER)")
    try:
        store = MapStore(path)
    except (FileNotFoundError, StoreMismatchError, StoreDamagedError) as err:
        raise StoreChangedError(f"the index in {index_folder} was built from the map store {ref['path']}; {path} is "
                                f"not that store: {err}") from None
    if store.meta.get("store_id") != ref["store_id"]:
        raise StoreChangedError(f"{path} is another map store (id {store.meta.get('store_id')}) than the one the index "
                                f"in {index_folder} was built from ({ref['store_id']} at {ref['path']})")
    if store.version != ref["version"]:
        raise StoreChangedError(f"the map store {path} changed since the index in {index_folder} was built from it "
                                f"(version {ref['version']}, now {store.version}): rebuild the index")
    return {**ref, "path": str(path.resolve())}


def extend_store(base: MapStore, images: Sequence[str]) -> None:
    """Commit `base`'s metadata for the longer image list `images` (base's images first), as one new version whose
    new rows extract_to_store then fills. A later version already made for these images (an extension stopped
    while filling) is kept for extract_to_store to resume; any other later version is undone first (the store
    restored to `base`'s version)."""
    lance, _ = _lance()
    want = _images_hash(images)
    try:
        latest = lance.dataset(str(base.folder))
        if latest.version != base.version:
            raw = (latest.schema.metadata or {}).get(b"clusvpr_map")
            meta = loads_bounded(raw, f"map metadata of {base.folder}") if raw is not None else None
            if isinstance(meta, dict) and meta.get("images_sha256") == want and meta.get("count") == len(images):
                return
            lance.dataset(str(base.folder), version=base.version).restore()
        meta = {**base.meta, "count": len(images), "images_sha256": want}
        lance.dataset(str(base.folder)).update_schema_metadata({"clusvpr_map": json.dumps(meta)}, replace=True)
    except OSError as err:
        raise _as_os_error(err, base.folder, "extend") from err


STALE_STAGE_S = 600.0  # a staged create older than this is a killed creator's: creating takes milliseconds


def _create(folder: Path, dim: int, count: int, meta: Dict[str, Any]) -> bool:
    """An empty store with its metadata, built in a staging folder beside `folder` and renamed onto it: the rename
    succeeds only while `folder` is absent or empty, so of two creators at the same instant exactly one wins and the
    other finds the winner's store (whose metadata it then checks). True when this call created the store."""
    lance, _ = _lance()
    _remove_stale_stages(folder)
    clear_uncommitted(folder)  # what a create killed before its first commit left (a half-written manifest)
    schema = _schema(dim, {**meta, "format": FORMAT, "count": count, "dim": dim, "store_id": uuid.uuid4().hex})
    try:
        with staged_folder(folder, exclusive=True) as stage:  # the rename is refused once another store is there
            lance.write_dataset(schema.empty_table(), str(stage), mode="create")
    except FileExistsError:
        return False
    except OSError as err:
        raise _as_os_error(err, folder, "create") from err
    return True


def _remove_stale_stages(folder: Path) -> None:
    """Staging folders of `folder` that a killed creator left (older than STALE_STAGE_S; a live creator's is
    milliseconds old and kept, so removing never races with a create in progress)."""
    now = time.time()
    for stage in leftovers(folder.parent, folder):
        try:
            if now - stage.stat().st_mtime > STALE_STAGE_S:
                shutil.rmtree(stage, ignore_errors=True)
        except OSError:
            pass


def _write_fragments(folder: Path, dim: int, meta: Dict[str, Any], rows: np.ndarray, images: Sequence[str],
                     descriptors: np.ndarray, places: Optional[Sequence[Any]], coords: Optional[np.ndarray]):
    """Data files for these rows, not yet part of any version (commit them with _commit)."""
    lance, pa = _lance()
    from lance.fragment import write_fragments

    n = len(rows)
    table = pa.table({
        "row": pa.array(rows, pa.int64()), "image": pa.array(list(images), pa.string()),
        "place": pa.array([None if p is None else str(p) for p in places] if places is not None else [None] * n,
                          pa.string()),
        "descriptor": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(descriptors,
                                                                                      np.float32).ravel()), dim),
        "x": pa.array(coords[:, 0] if coords is not None else [None] * n, pa.float64()),
        "y": pa.array(coords[:, 1] if coords is not None else [None] * n, pa.float64()),
    }, schema=_schema(dim, meta))
    try:
        return write_fragments(table, str(folder), schema=table.schema)
    except OSError as err:
        raise _as_os_error(err, folder, "write to") from err


def _commit(folder: Path, fragments: list) -> None:
    lance, _ = _lance()
    if not fragments:
        return
    try:
        version = lance.dataset(str(folder)).version
    except BaseException as err:  # noqa: B036  (Lance's panics are BaseExceptions)
        if not lance_error(err):
            raise
        raise diagnose(folder, err) from None
    try:
        store_checksums.record(folder, [Path(df.path).name for fragment in fragments for df in fragment.files])
        lance.LanceDataset.commit(str(folder), lance.LanceOperation.Append(fragments), read_version=version)
    except OSError as err:
        raise _as_os_error(err, folder, "commit to") from err
