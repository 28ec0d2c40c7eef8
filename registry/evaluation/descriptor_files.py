"""Save and load query/database descriptors (.npz, .h5, or a .npy pair), each file written atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple, Union

import h5py
import numpy as np

from .._util.atomic import atomic_path as _atomic

PathLike = Union[str, os.PathLike]
H5_SUFFIXES = (".h5", ".hdf5")
KEYS = ("queries", "database")


def _npy_pair(path: Path) -> Tuple[Path, Path]:
    return tuple(path.with_name(f"{path.stem}_{key}.npy") for key in KEYS)


def save_descriptors(path: PathLike, q: np.ndarray, db: np.ndarray) -> List[Path]:
    """Write float32 query and database descriptors; returns the files written.

    `.npz` and `.h5`/`.hdf5` hold arrays `queries` and `database`; `x.npy` becomes `x_queries.npy` and
    `x_database.npy` (memory-mappable with `np.load(..., mmap_mode='r')`).
    """
    path = Path(path)
    arrays = {key: np.ascontiguousarray(a, dtype=np.float32) for key, a in zip(KEYS, (q, db))}
    suffix = path.suffix.lower()
    if suffix == ".npy":
        targets = _npy_pair(path)
        for target, key in zip(targets, KEYS):
            with _atomic(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arrays[key])
        return list(targets)
    if suffix == ".npz":
        with _atomic(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    elif suffix in H5_SUFFIXES:
        with _atomic(path) as tmp, h5py.File(tmp, "w") as fh:
            for key, arr in arrays.items():
                fh.create_dataset(key, data=arr)
    else:
        raise ValueError(f"cannot save descriptors to {path}: use a .npy, .npz, .h5 or .hdf5 file name")
    return [path]


def load_descriptors(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """(queries, database) written by `save_descriptors`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        q_path, db_path = _npy_pair(path)
        return np.load(q_path), np.load(db_path)
    if suffix == ".npz":
        with np.load(path) as data:
            return data["queries"], data["database"]
    if suffix in H5_SUFFIXES:
        with h5py.File(path, "r") as fh:
            return fh["queries"][()], fh["database"][()]
    raise ValueError(f"cannot load descriptors from {path}: expected .npy, .npz, .h5 or .hdf5")
