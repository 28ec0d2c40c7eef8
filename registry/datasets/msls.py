"""Mapillary Street-Level Sequences (Warburg et al. CVPR 2020) from its CSV metadata.

Layout: `<root>/train_val/<city>/{query,database}/` with `images/<key>.jpg`, `postprocessed.csv`
(`key`, `easting`, `northing`, ...), `raw.csv` (`key`, ..., `pano`) and `subtask_index.csv` (boolean
columns `all`, `s2w`, ...); the rows of the three files are aligned.

Two evaluation sets on the validation cities (cph, sf), named apart:
- `msls_val` follows the official loader (mapillary/mapillary_sls, mode 'val', task im2im, subtask
  'all'), which the 740-query MSLS-val benchmark uses: query and database images flagged in the `all`
  column of `subtask_index.csv`, panoramas (`pano` True in `raw.csv`) removed, and only the queries
  that have a database image within 25 m kept. The night and view-direction flags of
  `postprocessed.csv` are not filters there (the official code uses them only to weight training
  sampling), so they are not filters here either.
- `msls_val_full` keeps every non-panoramic query and database image of those cities; queries with no
  positive stay in the set and are counted apart by the recall.
`msls_train` is every other city of `train_val/`, filtered like `msls_val_full`, for the trainer.
Positives are computed per city (UTM coordinates of different cities are not comparable). The 740
count comes from the published benchmark files; this filter was checked on miniature copies only.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .base import VPRDataset, neighbours_within, require_dir, require_file, require_images_exist

VAL_CITIES = ("cph", "sf")
_TRUE = {"true", "1", "1.0", "yes"}


def _read_columns(path: Path, columns: Sequence[str]) -> Dict[str, List[str]]:
    """The named columns of a CSV file; errors name the file and the missing column."""
    require_file(path, "MSLS metadata file", "the MSLS metadata.zip must be extracted over the images")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(header)})")
        rows = list(reader)
    return {c: [row[c] for row in rows] for c in columns}


def _flags(values: List[str]) -> np.ndarray:
    return np.array([v.strip().lower() in _TRUE for v in values], dtype=bool)


def _read_side(folder: Path, official: bool) -> Tuple[List[Path], np.ndarray]:
    """Image paths and UTM of one city's query or database folder, filtered as the protocol says."""
    require_dir(folder, "MSLS city")
    post = _read_columns(folder / "postprocessed.csv", ("key", "easting", "northing"))
    raw = _read_columns(folder / "raw.csv", ("key", "pano"))
    if raw["key"] != post["key"]:
        raise ValueError(f"{folder / 'raw.csv'} and postprocessed.csv list different keys; re-extract the metadata")
    keep = ~_flags(raw["pano"])
    if official:
        subtask = _read_columns(folder / "subtask_index.csv", ("all",))["all"]
        if len(subtask) != len(keep):
            raise ValueError(f"{folder / 'subtask_index.csv'} has {len(subtask)} rows, postprocessed.csv {len(keep)}")
        keep &= _flags(subtask)
    idx = np.flatnonzero(keep)
    utm = np.column_stack([np.asarray(post["easting"], float), np.asarray(post["northing"], float)])[idx]
    return [folder / "images" / f"{post['key'][i]}.jpg" for i in idx], utm


def training_cities(root: Path) -> List[str]:
    """Every city folder of `<root>/train_val` except the validation cities, sorted."""
    return sorted(p.name for p in _split_dir(Path(root)).iterdir() if p.is_dir() and p.name not in VAL_CITIES)


def _split_dir(root: Path) -> Path:
    return require_dir(root / "train_val", "MSLS train_val", f"expected <root>/train_val/<city>/ under {root}")


def load_msls(
    root: Path,
    cities: Sequence[str] = VAL_CITIES,
    official: bool = True,
    pos_radius: float = 25.0,
    name: str = "msls_val",
) -> VPRDataset:
    """MSLS over `cities` of `train_val/`: the official val protocol (`official`) or every non-panoramic image."""
    root = Path(root)
    split_dir = _split_dir(root)
    if not cities:
        raise FileNotFoundError(f"no MSLS city folders to load under {split_dir}")
    db_images: List[Path] = []
    q_images: List[Path] = []
    utm: Dict[str, List[np.ndarray]] = {"db": [], "q": []}
    groups: Dict[str, List[np.ndarray]] = {"db": [], "q": []}
    for g, city in enumerate(cities):
        city_dir = require_dir(split_dir / city, f"MSLS city '{city}'")
        db_paths, db_utm = _read_side(city_dir / "database", official)
        q_paths, q_utm = _read_side(city_dir / "query", official)
        db_images += db_paths
        q_images += q_paths
        for side, coords in (("db", db_utm), ("q", q_utm)):
            utm[side].append(coords)
            groups[side].append(np.full(len(coords), g))
    db_coords, q_coords = np.concatenate(utm["db"]), np.concatenate(utm["q"])
    db_groups, q_groups = np.concatenate(groups["db"]), np.concatenate(groups["q"])
    positives = neighbours_within(q_coords, db_coords, pos_radius, q_groups, db_groups)
    if official:
        has = np.array([len(p) > 0 for p in positives], dtype=bool)
        q_images = [p for p, h in zip(q_images, has) if h]
        q_coords, q_groups = q_coords[has], q_groups[has]
        positives = [p for p, h in zip(positives, has) if h]
    require_images_exist(db_images, f"{name} database")
    require_images_exist(q_images, f"{name} query")
    return VPRDataset(
        name=name,
        root=root,
        db_images=db_images,
        q_images=q_images,
        positives=positives,
        db_coords=db_coords,
        q_coords=q_coords,
        db_groups=db_groups,
        q_groups=q_groups,
    )
