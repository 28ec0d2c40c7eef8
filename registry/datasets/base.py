"""VPRDataset: the one interface every adapter returns (database images, query images, positives per query)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class VPRDataset:
    """A query set, a database and the database indices that count as correct for each query.

    Coordinates are UTM (easting, northing) in metres (`coord_unit='m'`) or the place index along an
    aligned traversal (`coord_unit='place'`); they are compared only within one group (an MSLS city,
    a UTM zone). `ignore[i]` lists database images never to be retrieved for query i (TokyoTM: the
    query's own capture), and `query_longer_side` is the query resize of the protocol (Tokyo 24/7: 640).
    `route_ordered` says that queries and database each follow one route in order (aligned traversals, the
    Corridor), which sequence matching needs.
    """

    name: str
    root: Path
    db_images: List[Path]
    q_images: List[Path]
    positives: List[np.ndarray]
    db_coords: Optional[np.ndarray] = None
    q_coords: Optional[np.ndarray] = None
    coord_unit: str = "m"
    db_groups: Optional[np.ndarray] = None
    q_groups: Optional[np.ndarray] = None
    ignore: Optional[List[np.ndarray]] = None
    query_longer_side: Optional[int] = None
    route_ordered: bool = False
    train_pos_radius: float = 10.0
    train_neg_radius: float = 25.0
    _near_cache: Dict[float, List[np.ndarray]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.positives = [np.asarray(p, dtype=np.int64) for p in self.positives]
        if len(self.positives) != len(self.q_images):
            raise ValueError(f"{self.name}: {len(self.positives)} positive lists for {len(self.q_images)} queries")
        for label, coords, images in (("db", self.db_coords, self.db_images), ("q", self.q_coords, self.q_images)):
            if coords is not None and len(coords) != len(images):
                raise ValueError(f"{self.name}: {len(coords)} {label} coordinates for {len(images)} {label} images")

    @property
    def num_db(self) -> int:
        return len(self.db_images)

    @property
    def num_queries(self) -> int:
        return len(self.q_images)

    @property
    def num_queries_without_positives(self) -> int:
        return sum(len(p) == 0 for p in self.positives)

    def summary(self) -> str:
        """One line for logs: name, sizes, root."""
        return f"{self.name}: {self.num_db} database / {self.num_queries} queries ({self.root})"

    def _require_coords(self) -> None:
        if self.db_coords is None or self.q_coords is None:
            raise ValueError(
                f"{self.name} has no coordinates, so training positives and negatives cannot be mined; "
                "train on a dataset with UTM coordinates or an aligned traversal"
            )

    def _within(self, radius: float) -> List[np.ndarray]:
        self._require_coords()
        if radius not in self._near_cache:
            self._near_cache[radius] = neighbours_within(
                self.q_coords, self.db_coords, radius, self.q_groups, self.db_groups
            )
        return self._near_cache[radius]

    def train_positives(self, radius: Optional[float] = None) -> List[np.ndarray]:
        """Per query, database indices within `radius` (default `train_pos_radius`: 10 m), minus `ignore`."""
        found = self._within(self.train_pos_radius if radius is None else radius)
        if self.ignore is None:
            return found
        return [np.setdiff1d(f, ign, assume_unique=True) for f, ign in zip(found, self.ignore)]

    def non_negatives(self, radius: Optional[float] = None) -> List[np.ndarray]:
        """Per query, database indices within `radius` (default `train_neg_radius`: 25 m): never used as negatives."""
        return self._within(self.train_neg_radius if radius is None else radius)


def neighbours_within(
    q_coords: np.ndarray,
    db_coords: np.ndarray,
    radius: float,
    q_groups: Optional[np.ndarray] = None,
    db_groups: Optional[np.ndarray] = None,
) -> List[np.ndarray]:
    """Per query, the sorted database indices at Euclidean distance <= radius (same group only)."""
    db_coords = np.asarray(db_coords, dtype=np.float64).reshape(len(db_coords), -1)
    q_coords = np.asarray(q_coords, dtype=np.float64).reshape(len(q_coords), db_coords.shape[1])
    out: List[np.ndarray] = [np.empty(0, np.int64)] * len(q_coords)
    if q_groups is None or db_groups is None:
        q_groups, db_groups = np.zeros(len(q_coords), int), np.zeros(len(db_coords), int)
    for group in np.unique(q_groups):
        q_idx, db_idx = np.flatnonzero(q_groups == group), np.flatnonzero(db_groups == group)
        if len(db_idx) == 0:
            continue
        tree = cKDTree(db_coords[db_idx])
        for qi, hits in zip(q_idx, tree.query_ball_point(q_coords[q_idx], r=radius)):
            out[qi] = np.sort(db_idx[np.asarray(hits, dtype=np.int64)])
    return out


def natural_key(name: str) -> list:
    """Sort key that orders '2.jpg' before '10.jpg'."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def require_dir(path: Path, what: str, fix: str = "") -> Path:
    """Return `path` if it is a folder, else raise FileNotFoundError naming it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}" + (f"; {fix}" if fix else ""))
    return path


def require_file(path: Path, what: str, fix: str = "") -> Path:
    """Return `path` if it is a file, else raise FileNotFoundError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}" + (f"; {fix}" if fix else ""))
    return path


def list_images(folder: Path, what: str, recursive: bool = False) -> List[Path]:
    """Image files in `folder`, naturally sorted by relative path; a clear error if there are none."""
    require_dir(folder, what)
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the {what} folder {folder}")
    return sorted(files, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def require_images_exist(paths: Sequence[Path], what: str) -> None:
    """Raise FileNotFoundError naming the first missing image and how many are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} {what} images are missing, first: {missing[0]}; "
            "check the dataset root and that the download was extracted completely"
        )
