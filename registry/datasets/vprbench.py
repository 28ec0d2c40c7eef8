"""VPR-Bench layout (Zaffar et al. IJCV 2021): `query/`, `ref/` and a `.npy` ground truth of `[q, [refs]]` rows.

Image indices are the positions of the naturally sorted file names. The ground truth is an object
array, so reading it needs `allow_pickle=True`: load ground-truth files only from sources you trust.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from .base import VPRDataset, list_images, require_file

GT_NAME = "ground_truth_new.npy"


def find_ground_truth(root: Path) -> Path:
    """`root/ground_truth_new.npy`, else the only `.npy` file in `root`."""
    default = root / GT_NAME
    if default.is_file():
        return default
    found = sorted(root.glob("*.npy"))
    if len(found) == 1:
        return found[0]
    listing = ", ".join(p.name for p in found) or "none"
    raise FileNotFoundError(f"VPR-Bench ground truth {default} not found (other .npy files in {root}: {listing})")


def _refs(value: object, row: int, num_db: int, path: Path) -> np.ndarray:
    try:
        refs = np.atleast_1d(np.asarray(value, dtype=np.int64)).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{path}: row {row} has reference indices {value!r} that are not integers") from None
    bad = refs[(refs < 0) | (refs >= num_db)]
    if len(bad):
        raise ValueError(
            f"{path}: row {row} refers to reference image {bad[0]}, but there are {num_db} (0..{num_db - 1})"
        )
    return np.unique(refs)


def read_ground_truth(path: Path, num_q: int, num_db: int) -> List[np.ndarray]:
    """Positives per query from a `[q, [refs]]` .npy file; queries it does not list get none."""
    require_file(path, "VPR-Bench ground truth")
    try:
        gt = np.load(path, allow_pickle=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} as a .npy file: {err}") from err
    positives: List[Optional[np.ndarray]] = [None] * num_q
    for row_i, row in enumerate(gt):
        if not hasattr(row, "__len__") or len(row) != 2:
            raise ValueError(f"{path}: row {row_i} is {row!r}, expected [query_index, [reference indices]]")
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
