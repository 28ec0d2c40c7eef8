"""HDF5 files in the reference tools' layout: cluster centres (`centroids`, `descriptors`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import NonFiniteValuesError
from .atomic import atomic_path

PathLike = Union[str, os.PathLike]


class MissingDatasetError(ValueError, KeyError):
    """An HDF5 file lacks a dataset the zoo reads from it (also a KeyError: the key is missing)."""

    __str__ = BaseException.__str__


MAX_VALUES = 1 << 28  # values one dataset may hold (1 GB as float32); the largest a release holds is 2^27 (pca.h5)
MAX_CLUSTERS = 1024  # centroids rows: num_clusters' documented range (registry._util.ranges)
MAX_WIDTH = 1 << 16  # descriptor widths: whitening_dim's documented range


def _read_datasets(path: PathLike, keys: Tuple[str, ...],
                   check_shapes: Optional[Callable[[Dict[str, Tuple[int, ...]]], Optional[str]]] = None,
                   ) -> Tuple[np.ndarray, ...]:
    """The datasets `keys` of an HDF5 file as arrays. Their shapes and dtypes are read first and checked (numbers,
    at most 2-D, at most MAX_VALUES values, and `check_shapes(shapes)`, which returns what is wrong or None) before
    any data is read, so a small file declaring a huge dataset allocates nothing."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    fix = "the file is damaged or not one the zoo wrote: restore a good copy or recompute it"
    with h5py.File(path, "r") as f:
        missing = [k for k in keys if k not in f]
        if missing:
            raise MissingDatasetError(f"{path} lacks the datasets {missing} (has {sorted(f.keys())}); expected keys "
                                      f"{list(keys)}; {fix}")
        shapes = {}
        for k in keys:
            item = f[k]
            if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiu" or item.ndim > 2:
                kind = (f"a {item.ndim}-D dataset of {item.dtype}" if isinstance(item, h5py.Dataset)
                        else type(item).__name__)
                raise ValueError(f"{path}: {k!r} is {kind}, not a 1-D or 2-D array of numbers; {fix}")
            if item.size > MAX_VALUES:
                raise ValueError(f"{path}: {k!r} declares shape {item.shape} ({item.size:,} values), more than the "
                                 f"{MAX_VALUES:,} a dataset of the zoo holds; {fix}")
            shapes[k] = tuple(int(n) for n in item.shape)
        problem = check_shapes(shapes) if check_shapes is not None else None
        if problem:
            raise ValueError(f"{path}: {problem}; {fix}")
        arrays = tuple(np.asarray(f[k][...]) for k in keys)
    for key, array in zip(keys, arrays):
        if np.issubdtype(array.dtype, np.number) and not np.isfinite(array).all():
            raise NonFiniteValuesError(
                f"{path} holds NaN or Inf values in its {key!r} dataset ({int((~np.isfinite(array)).sum())} of "
                f"{array.size} values): the file is damaged or was written from a diverged run (a matching sha256 "
                "cannot tell a file saved that way); restore a good copy or recompute it"
            )
    return arrays


def write_datasets(path: PathLike, **arrays: np.ndarray) -> None:
    """Write named float32 arrays to an HDF5 file atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=np.asarray(v, dtype=np.float32))


def save_centroids(path: PathLike, centroids: torch.Tensor, descriptors: torch.Tensor) -> None:
    """Write k-means centres and the sampled descriptors they came from (reference layout)."""
    write_datasets(path, centroids=_np(centroids), descriptors=_np(descriptors))


def load_centroids(path: PathLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read (centroids K x D, descriptors N x D) as float32 tensors."""
    c, d = _read_datasets(path, ("centroids", "descriptors"), _centroid_shapes_problem)
    return torch.from_numpy(c.astype(np.float32)), torch.from_numpy(d.astype(np.float32))


def _centroid_shapes_problem(shapes: Dict[str, Tuple[int, ...]]) -> Optional[str]:
    c, d = shapes["centroids"], shapes["descriptors"]
    if len(c) != 2 or len(d) != 2 or (d[0] and d[1] != c[1]):
        return f"centroids {c} and descriptors {d} must be 2-D with equal widths"
    if not (1 <= c[0] <= MAX_CLUSTERS and 1 <= c[1] <= MAX_WIDTH):
        return (f"centroids {c} are not K x D with K in 1..{MAX_CLUSTERS} (num_clusters' range) and D in "
                f"1..{MAX_WIDTH}")
    return None


def read_pca(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read (U, lams, mu) of a PCA-whitening file with keys U, lams, mu, Utmu."""
    U, lams, mu = _read_datasets(path, ("U", "lams", "mu"))
    lams, mu = lams.reshape(-1), mu.reshape(-1)
    if U.shape == (lams.size, mu.size) and lams.size != mu.size:  # stored out x in: transpose to in x out
        U = U.T
    if U.shape != (mu.size, lams.size):
        raise ValueError(f"{path}: U {U.shape}, lams {lams.shape}, mu {mu.shape} are not a consistent PCA")
    return U, lams, mu


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
