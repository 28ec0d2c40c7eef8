"""Training data as places: every image carries the id of the place it shows (the input of place-batch training).

Sources:
- the GSV-Cities layout (Ali-bey et al., "GSV-Cities: Toward appropriate supervised visual place recognition",
  Neurocomputing 2022): `Dataframes/<city>.csv` (place_id, year, month, northdeg, city_id, lat, lon, panoid) and
  `Images/<city>/<city>_<place_id>_<year>_<month>_<northdeg>_<lat>_<lon>_<panoid>.jpg`;
- a CSV of one's own images: `image,place`, `image,lat,lon` or `image,utm_east,utm_north` (image paths relative to
  the CSV's folder); places come from the labels or, for coordinates, by distance;
- any `VPRDataset` (`registry.datasets.load_dataset`): an aligned traversal's place is its database position (one
  image per traversal and place), a dataset with UTM coordinates is grouped by distance.

Grouping by distance is leader clustering in a fixed order: the first image not yet in a place starts a new place
with every unassigned image within `radius` metres of it, so no image is further than `radius` from its place's
first image. Latitude and longitude are compared on a sphere of the Earth's mean radius (chord length, which
equals the arc length to within 1e-9 relative at these distances).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.spatial import cKDTree

from .base import VPRDataset, natural_key, require_dir, require_file, require_images_exist

EARTH_RADIUS_M = 6371008.8
DEFAULT_PLACE_RADIUS_M = 10.0
MAX_CSV_BYTES = 1 << 30
GSV_COLUMNS = ("place_id", "year", "month", "northdeg", "lat", "lon", "panoid")
CSV_FORMATS = {("image", "place"): "place", ("image", "lat", "lon"): "latlon",
               ("image", "utm_east", "utm_north"): "utm"}


@dataclass
class PlaceSet:
    """Images with a place label each. `place_coords[p]` (optional) locates place p in `coord_unit` ('m': metres,
    'place': the position along an aligned route), so that a sampler can keep nearby places out of one batch."""

    name: str
    images: List[Path]
    labels: np.ndarray
    place_coords: Optional[np.ndarray] = None
    coord_unit: str = "m"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{self.name}: {self.labels.shape[0] if self.labels.ndim else 0} labels for "
                             f"{len(self.images)} images")
        if len(self.images) and (self.labels.min() < 0):
            raise ValueError(f"{self.name}: place labels must be >= 0")
        if self.place_coords is not None:
            self.place_coords = np.asarray(self.place_coords, dtype=np.float64).reshape(self.num_places, -1)

    @property
    def num_places(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def images_per_place(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_places)

    def as_dataset(self) -> VPRDataset:
        """The images as a training VPRDataset for place batches: every image a database row whose coordinate is
        its place label (`coord_unit='place'`, no queries), so `places_from_dataset` gives these places back. No
        two labels count as near each other (a negative radius of half a label)."""
        coords = self.labels.astype(np.float64)[:, None]
        return VPRDataset(self.name, self.images[0].parent if self.images else Path("."), list(self.images), [], [],
                          db_coords=coords, q_coords=np.empty((0, 1)), coord_unit="place", train_pos_radius=0.0,
                          train_neg_radius=0.5)

    def summary(self) -> str:
        counts = self.images_per_place()
        return (f"{self.name}: {len(self.images)} images of {self.num_places} places "
                f"({counts.min() if len(counts) else 0}..{counts.max() if len(counts) else 0} images per place)")


def group_by_distance(coords: np.ndarray, radius: float, groups: Optional[np.ndarray] = None) -> np.ndarray:
    """Place label per row: leader clustering in row order within `radius` (same group only). Labels are 0..P-1
    in the order places were started."""
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"the place radius must be a positive number of metres, got {radius}")
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    if not np.isfinite(coords).all():
        bad = int(np.flatnonzero(~np.isfinite(coords).all(axis=1))[0])
        raise ValueError(f"coordinate row {bad} is not finite: {coords[bad].tolist()}")
    groups = np.zeros(len(coords), np.int64) if groups is None else np.asarray(groups)
    labels = np.full(len(coords), -1, np.int64)
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    trees = {g: (idx, cKDTree(coords[idx])) for g, idx in members.items()}
    next_label = 0
    for i in range(len(coords)):
        if labels[i] >= 0:
            continue
        idx, tree = trees[groups[i]]
        members = idx[np.asarray(tree.query_ball_point(coords[i], r=radius), dtype=np.int64)]
        members = members[labels[members] < 0]
        labels[members] = next_label
        next_label += 1
    return labels


def latlon_to_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on a sphere of the Earth's mean radius, in metres, for distances between nearby positions."""
    lat, lon = np.radians(np.asarray(lat, np.float64)), np.radians(np.asarray(lon, np.float64))
    if (np.abs(lat) > math.pi / 2 + 1e-12).any():
        raise ValueError("latitudes must lie in -90..90 degrees")
    return EARTH_RADIUS_M * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def _place_means(coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
    sums = np.zeros((int(labels.max()) + 1, coords.shape[1]))
    np.add.at(sums, labels, coords)
    return sums / np.bincount(labels)[:, None]


def _dense(labels: Sequence) -> np.ndarray:
    """Any hashable labels -> 0..P-1 in order of first appearance."""
    ids: Dict = {}
    return np.array([ids.setdefault(v, len(ids)) for v in labels], dtype=np.int64)


def places_from_dataset(vpr: VPRDataset, radius: float = DEFAULT_PLACE_RADIUS_M) -> PlaceSet:
    """Database and query images of `vpr` as places: an aligned traversal's places are its database positions;
    UTM datasets are grouped by distance (`radius` metres) within each group (city, zone)."""
    images = list(vpr.db_images) + list(vpr.q_images)
    if vpr.db_coords is None or vpr.q_coords is None:
        raise ValueError(f"{vpr.name} has no coordinates or aligned places, so its images cannot be grouped into "
                         "places; train on an aligned traversal, a dataset with UTM coordinates, gsv_cities:DIR "
                         "or images_csv:FILE")
    db_coords = np.reshape(vpr.db_coords, (len(vpr.db_images), -1))
    coords = np.concatenate([db_coords, np.reshape(vpr.q_coords, (len(vpr.q_images), db_coords.shape[1]))])
    if vpr.coord_unit == "place":
        labels = np.rint(coords[:, 0]).astype(np.int64)
        place_coords = np.arange(int(labels.max()) + 1, dtype=np.float64)[:, None]
        return PlaceSet(vpr.name, images, labels, place_coords, "place")
    groups = None
    if vpr.db_groups is not None and vpr.q_groups is not None:
        groups = np.concatenate([vpr.db_groups, vpr.q_groups])
    labels = group_by_distance(coords, radius, groups)
    return PlaceSet(vpr.name, images, labels, _place_means(coords, labels) if groups is None else None, "m")


def _read_csv(path: Path) -> Tuple[List[str], List[List[str]]]:
    require_file(path, "CSV file")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size} bytes, more than the {MAX_CSV_BYTES}-byte limit for a "
                         "place CSV; split it")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty: expected a header row")
    return [h.strip() for h in rows[0]], [r for r in rows[1:] if r]


def _floats(rows: List[List[str]], col: int, what: str, path: Path) -> np.ndarray:
    try:
        values = np.array([float(r[col]) for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: a {what} value is missing or not a number ({e})") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: {what} row {int(np.flatnonzero(~np.isfinite(values))[0]) + 2} is not finite")
    return values


def load_images_csv(path: Path, radius: float = DEFAULT_PLACE_RADIUS_M) -> PlaceSet:
    """A CSV with a header `image,place`, `image,lat,lon` or `image,utm_east,utm_north`; image paths relative to
    the CSV's folder (or absolute)."""
    path = Path(path).expanduser()
    header, rows = _read_csv(path)
    kind = CSV_FORMATS.get(tuple(header))
    if kind is None:
        formats = " or ".join(",".join(h) for h in CSV_FORMATS)
        raise ValueError(f"{path}: header {','.join(header)!r} is not one of {formats}")
    if not rows:
        raise ValueError(f"{path} lists no images")
    short = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if short is not None:
        raise ValueError(f"{path} line {short + 2} has {len(rows[short])} fields, the header {len(header)}")
    images = [Path(r[0]) if Path(r[0]).is_absolute() else path.parent / r[0] for r in rows]
    require_images_exist(images, f"{path.name}'s")
    if kind == "place":
        return PlaceSet(path.stem, images, _dense(r[1].strip() for r in rows), None, "m")
    a, b = _floats(rows, 1, header[1], path), _floats(rows, 2, header[2], path)
    coords = latlon_to_xyz(a, b) if kind == "latlon" else np.stack([a, b], axis=1)
    labels = group_by_distance(coords, radius)
    return PlaceSet(path.stem, images, labels, _place_means(coords, labels), "m")


def _gsv_index(folder: Path, city: str) -> Dict[Tuple[str, ...], Path]:
    """Images of one city by (place_id, year, month, northdeg, panoid), parsed from the file names."""
    found: Dict[Tuple[str, ...], Path] = {}
    prefix = f"{city}_"
    for p in folder.iterdir():
        if not (p.name.startswith(prefix) and p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            continue
        fields = p.stem[len(prefix):].split("_", 6)
        if len(fields) == 7:
            place, year, month, deg, _lat, _lon, panoid = fields
            found[(str(int(place)), str(int(year)), str(int(month)), str(int(deg)), panoid)] = p
    return found


def load_gsv_cities(root: Path, cities: Optional[Sequence[str]] = None, min_images: int = 4) -> PlaceSet:
    """GSV-Cities under `root`: `Dataframes/<city>.csv` + `Images/<city>/`. `cities` (default: every CSV) picks
    cities; places with fewer than `min_images` images are left out (GSV-Cities' own default is 4)."""
    root = Path(root).expanduser()
    frames = require_dir(root / "Dataframes", "GSV-Cities Dataframes", "expected DIR/Dataframes/<city>.csv")
    available = sorted((p.stem for p in frames.glob("*.csv")), key=natural_key)
    chosen = list(cities) if cities else available
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise FileNotFoundError(f"no Dataframes/{unknown[0]}.csv under {root}; cities there: {', '.join(available)}")
    images: List[Path] = []
    places: List[Tuple[str, str]] = []
    coords: List[Tuple[float, float]] = []
    for city in chosen:
        header, rows = _read_csv(frames / f"{city}.csv")
        missing = [c for c in GSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{frames / f'{city}.csv'} lacks the columns {', '.join(missing)}")
        col = {c: header.index(c) for c in GSV_COLUMNS}
        index = _gsv_index(require_dir(root / "Images" / city, f"GSV-Cities images of {city}"), city)
        for n, r in enumerate(rows):
            try:
                key = tuple(str(int(float(r[col[c]]))) for c in GSV_COLUMNS[:4]) + (r[col["panoid"]],)
                lat, lon = float(r[col["lat"]]), float(r[col["lon"]])
            except (ValueError, IndexError):
                raise ValueError(f"{frames / f'{city}.csv'} line {n + 2} is malformed: {r[:8]}") from None
            if key not in index:
                raise FileNotFoundError(f"{frames / f'{city}.csv'} line {n + 2}: no image of place {key[0]} "
                                        f"({key[1]}-{key[2]}, bearing {key[3]}, {key[4]}) in {root / 'Images' / city}")
            images.append(index[key])
            places.append((city, key[0]))
            coords.append((lat, lon))
    labels = _dense(places)
    keep = np.bincount(labels)[labels] >= min_images
    images = [p for p, k in zip(images, keep) if k]
    labels = _dense(labels[keep])
    if not images:
        raise ValueError(f"no place under {root} has {min_images} or more images")
    xyz = latlon_to_xyz(*np.array(coords)[keep].T)
    return PlaceSet("gsv_cities", images, labels, _place_means(xyz, labels), "m")


PLACE_LAYOUTS = ("gsv_cities", "images_csv")


def load_place_set(spec: str, data_root=None, cities: Optional[Sequence[str]] = None,
                   radius: float = DEFAULT_PLACE_RADIUS_M, tolerance: Optional[int] = None) -> PlaceSet:
    """`gsv_cities:DIR` (with `cities`), `images_csv:FILE`, or any `load_dataset` spec (its database and query
    images grouped into places)."""
    from .loader import load_dataset

    layout, sep, rest = spec.partition(":")
    if sep and layout == "gsv_cities":
        return load_gsv_cities(Path(rest), cities)
    if sep and layout == "images_csv":
        return load_images_csv(Path(rest), radius)
    if cities:
        raise ValueError(f"cities apply to gsv_cities:DIR only, not to {spec!r}")
    return places_from_dataset(load_dataset(spec, data_root, tolerance), radius)
