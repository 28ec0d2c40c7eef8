"""HDF5 files in the reference tools' layout: cluster centres (`centroids`, `descriptors`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import torch

from ._atomic import atomic_path
from .errors import NonFiniteValuesError

PathLike = Union[str, os.PathLike]


def _read_datasets(path: PathLike, keys: Tuple[str, ...]) -> Tuple[np.ndarray, ...]:
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    with h5py.File(path, "r") as f:
        missing = [k for k in keys if k not in f]
        if missing:
            raise KeyError(f"{path} lacks the datasets {missing} (has {sorted(f.keys())}); expected keys {list(keys)}")
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
    c, d = _read_datasets(path, ("centroids", "descriptors"))
    if c.ndim != 2 or d.ndim != 2 or (d.size and d.shape[1] != c.shape[1]):
        raise ValueError(f"{path}: centroids {c.shape} and descriptors {d.shape} must be 2-D with equal widths")
    return torch.from_numpy(c.astype(np.float32)), torch.from_numpy(d.astype(np.float32))


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
