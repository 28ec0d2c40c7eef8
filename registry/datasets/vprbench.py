"""VPR-Bench layout (Zaffar et al. IJCV 2021): `query/`, `ref/` and a `.npy` ground truth of `[q, [refs]]` rows.

Image indices are the positions of the naturally sorted file names. The ground truth is an object array,
which numpy stores as a pickle; it is read with a restricted unpickler that rebuilds only numpy arrays,
integers and lists, so a crafted file cannot run code. Only the documented name `ground_truth_new.npy`
is picked up by itself; any other file must be named (`gt_file=`).
"""
from __future__ import annotations

import io
import numbers
import pickle
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
from numpy.lib import format as npy_format

from .base import VPRDataset, list_images, require_file

GT_NAME = "ground_truth_new.npy"
# the only globals an object-array .npy of integers and lists needs (numpy 1.x and 2.x module names)
_SAFE_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_DTYPE_KINDS = "biufO"  # numbers (a float is reported where it is used) and the object arrays that hold the rows


class UnsafeGroundTruthError(ValueError):
    """A ground-truth .npy asks to rebuild something other than numpy arrays, integers and lists."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes, integers, lists and tuples; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeGroundTruthError(f"it asks to rebuild {module}.{name}, which a ground-truth file never needs")


def _check_dtype(dtype: np.dtype, path: Path) -> None:
    if dtype.kind not in _DTYPE_KINDS:
        raise ValueError(f"{path}: the ground truth has dtype {dtype}; expected integers or [q, [refs]] rows")


def load_npy_safely(path: Path) -> np.ndarray:
    """A .npy array without executing code: plain arrays directly, object arrays through the restricted unpickler."""
    with open(path, "rb") as fh:
        try:
            version = npy_format.read_magic(fh)
            read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read_header[version](fh)
        except ValueError as err:
            raise ValueError(f"cannot read {path} as a .npy file: {err}") from None
        if not dtype.hasobject:
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        try:
            array = _RestrictedUnpickler(io.BytesIO(fh.read())).load()
        except UnsafeGroundTruthError as err:
            raise UnsafeGroundTruthError(
                f"{path} was not loaded: {err}. A VPR-Bench ground truth holds only [query, [references]] rows of "
                "integers; this file may be crafted to run code. Do not open it with np.load(allow_pickle=True); "
                "regenerate it from the dataset's own source"
            ) from None
        except Exception as err:  # noqa: BLE001  (a truncated or garbled pickle)
            raise ValueError(f"cannot read {path} as a .npy file: {type(err).__name__}: {err}") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise ValueError(f"{path}: the stored array does not match its header (shape {shape})")
    return array


def find_ground_truth(root: Path) -> Path:
    """`root/ground_truth_new.npy`; another .npy beside it is never taken by itself."""
    default = root / GT_NAME
    if default.is_file():
        return default
    found = sorted(p.name for p in root.glob("*.npy"))
    other = (f" (other .npy files there: {', '.join(found)}; they are not read unless named: rename the ground "
             f"truth to {GT_NAME}, or pass gt_file=PATH)") if found else ""
    raise FileNotFoundError(f"VPR-Bench ground truth {default} not found{other}")


def _integer(value: object) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _refs(value: object, row: int, num_db: int, path: Path) -> np.ndarray:
    values = np.atleast_1d(np.asarray(value, dtype=object)).ravel()
    bad_type = next((v for v in values if not _integer(v)), None)
    if bad_type is not None:
        raise ValueError(f"{path}: row {row} has reference index {_plain(bad_type)!r}, which is not an integer "
                         "(a float is never rounded: write integer indices)")
    refs = values.astype(np.int64)
    bad = refs[(refs < 0) | (refs >= num_db)]
    if len(bad):
        raise ValueError(
            f"{path}: row {row} refers to reference image {bad[0]}, but there are {num_db} (0..{num_db - 1})"
        )
    return np.unique(refs)


def read_ground_truth(path: Path, num_q: int, num_db: int) -> List[np.ndarray]:
    """Positives per query from a `[q, [refs]]` .npy file; queries it does not list get none."""
    require_file(path, "VPR-Bench ground truth")
    gt = load_npy_safely(path)
    _check_dtype(gt.dtype, path)
    positives: List[Optional[np.ndarray]] = [None] * num_q
    for row_i, row in enumerate(gt):
        if not hasattr(row, "__len__") or len(row) != 2:
            raise ValueError(f"{path}: row {row_i} is {row!r}, expected [query_index, [reference indices]]")
        if not _integer(row[0]):
            raise ValueError(f"{path}: row {row_i} names query {_plain(row[0])!r}, which is not an integer index")
        q = int(row[0])
        if not 0 <= q < num_q:
            raise ValueError(f"{path}: row {row_i} names query {q}, but there are {num_q} query images")
        if positives[q] is not None:
            raise ValueError(f"{path}: query {q} is listed twice (again in row {row_i})")
        positives[q] = _refs(row[1], row_i, num_db, path)
    return [np.empty(0, np.int64) if p is None else p for p in positives]


def load_vprbench(
    root: Path, gt_file: Optional[Path] = None, q_dir: str = "query", db_dir: str = "ref", name: Optional[str] = None
) -> VPRDataset:
    """A VPR-Bench dataset folder (the embedded `corridor` is one)."""
    root = Path(root)
    db_images = list_images(root / db_dir, f"VPR-Bench reference ('{db_dir}')")
    q_images = list_images(root / q_dir, f"VPR-Bench query ('{q_dir}')")
    gt_path = Path(gt_file) if gt_file is not None else find_ground_truth(root)
    return VPRDataset(
        name=name or root.name,
        root=root,
        db_images=db_images,
        q_images=q_images,
        positives=read_ground_truth(gt_path, len(q_images), len(db_images)),
    )
