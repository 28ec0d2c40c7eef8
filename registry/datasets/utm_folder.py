"""The `@UTM_east@UTM_north@zone_number@zone_letter@...@.jpg` folder layout (gmberton/VPR-datasets-downloader).

Layout: `<root>/images/{train,val,test}/{database,queries}/` (sub-folders allowed); `root` may also be
one split folder that holds `database/` and `queries/` directly. Positives are the database images
within `pos_radius` metres; when the names carry the UTM zone, only images of one zone are compared.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .base import VPRDataset, list_images, neighbours_within

SPLITS = ("train", "val", "test")


def parse_utm_name(path: Path) -> Tuple[float, float, Optional[str]]:
    """(easting, northing, zone or None) from an `@east@north@zone@letter@...` file name."""
    parts = path.name.split("@")
    try:
        east, north = float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path}: the name does not start with @UTM_east@UTM_north@ (e.g. @584321.5@4477012.3@17@T@...@.jpg)"
        ) from None
    zone = f"{parts[3]}{parts[4]}" if len(parts) > 5 and parts[3] and parts[4] else None
    return east, north, zone


def split_folder(root: Path, split: str) -> Path:
    """`root/images/<split>` when it exists, else `root` itself (already a split folder)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    nested = root / "images" / split
    return nested if nested.is_dir() else root


def _coords(paths: List[Path]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    parsed = [parse_utm_name(p) for p in paths]
    coords = np.array([(e, n) for e, n, _ in parsed], dtype=np.float64).reshape(-1, 2)
    zones = [z for _, _, z in parsed]
    return coords, (None if None in zones else np.array(zones))


def load_utm_folder(
    root: Path, split: str = "test", pos_radius: float = 25.0, name: Optional[str] = None
) -> VPRDataset:
    """Images and UTM positives of one split of a UTM-named dataset."""
    root = Path(root)
    folder = split_folder(root, split)
    db_images = list_images(folder / "database", f"{split} database", recursive=True)
    q_images = list_images(folder / "queries", f"{split} queries", recursive=True)
    db_coords, db_zones = _coords(db_images)
    q_coords, q_zones = _coords(q_images)
    if db_zones is None or q_zones is None:
        db_zones = q_zones = None
    return VPRDataset(
        name=name or (f"{root.name}_{split}" if folder != root else root.name),
        root=root,
        db_images=db_images,
        q_images=q_images,
        positives=neighbours_within(q_coords, db_coords, pos_radius, q_zones, db_zones),
        db_coords=db_coords,
        q_coords=q_coords,
        db_groups=db_zones,
        q_groups=q_zones,
    )
