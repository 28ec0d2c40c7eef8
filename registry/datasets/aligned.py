"""Aligned traversals: two runs over one route where the same file name is the same place (e.g. Nordland).

Places are the database file names in natural order; a query's place is the position of the database
image with the same name (stem), and its positives are the places within `tolerance` of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .base import VPRDataset, list_images, neighbours_within

# training radii keep the 10 m : 25 m ratio of the UTM datasets, in places
NEG_RADIUS_FACTOR = 2.5


def _require_unique_stems(images: List[Path], folder: Path) -> None:
    """One file per place: `0001.jpg` and `0001.png` would make the place ambiguous."""
    seen: Dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise ValueError(f"{folder} holds two images of place {path.stem!r} ({seen[path.stem].name} and "
                             f"{path.name}): an aligned traversal needs one file per place; remove one")
        seen[path.stem] = path


def load_aligned(
    root: Path,
    q_dir: str = "queries",
    db_dir: str = "database",
    tolerance: int = 0,
    places: Optional[Tuple[int, int]] = None,
    name: Optional[str] = None,
) -> VPRDataset:
    """Queries in `root/q_dir`, database in `root/db_dir`; `places=(first, last)` keeps places first..last (1-based)."""
    root = Path(root)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 places, got {tolerance}")
    db_images = list_images(root / db_dir, f"aligned-traversal database ('{db_dir}')")
    q_images = list_images(root / q_dir, f"aligned-traversal query ('{q_dir}')")
    for images, folder in ((db_images, db_dir), (q_images, q_dir)):
        _require_unique_stems(images, root / folder)
    place_of = {p.stem: i for i, p in enumerate(db_images)}
    unmatched = [p for p in q_images if p.stem not in place_of]
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} queries have no database image of the same name in {root / db_dir}, "
            f"first: {unmatched[0]}; an aligned traversal needs one file name per place in both folders"
        )
    first, last = places if places is not None else (1, len(db_images))
    if not 1 <= first <= last <= len(db_images):
        raise ValueError(f"places {first}..{last} are outside the {len(db_images)} places in {root / db_dir}")
    db_images = db_images[first - 1 : last]
    q_images = [p for p in q_images if first - 1 <= place_of[p.stem] < last]
    q_coords = np.array([place_of[p.stem] - (first - 1) for p in q_images], dtype=np.float64).reshape(-1, 1)
    db_coords = np.arange(len(db_images), dtype=np.float64)[:, None]
    return VPRDataset(
        name=name or root.name,
        root=root,
        db_images=db_images,
        q_images=q_images,
        positives=neighbours_within(q_coords, db_coords, tolerance),
        db_coords=db_coords,
        q_coords=q_coords,
        coord_unit="place",
        train_pos_radius=float(tolerance),
        train_neg_radius=NEG_RADIUS_FACTOR * tolerance,
        route_ordered=True,
    )
