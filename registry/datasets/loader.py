"""`load_dataset(spec)`: a known name, a folder path (layout detected) or `layout:path` -> VPRDataset."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from .aligned import load_aligned
from .base import VPRDataset, require_file
from .msls import load_msls, training_cities
from .netvlad_mat import dataset_from_struct, read_db_struct
from .pitts import DB_DIRS, PITTS_NAMES, Q_DIRS, load_pitts
from .tokyo import TOKYOTM_SPLITS, load_tokyo247, load_tokyotm
from .utm_folder import SPLITS, load_utm_folder
from .vprbench import load_vprbench

PathLike = Union[str, os.PathLike]
DEFAULT_DATASET = "corridor"
EMBEDDED_DATA = Path(__file__).resolve().parents[1] / "data"
DATA_ENV = "VPR_DATA"  # the user's data root when neither data_root nor --data-root is given
# fixed embedded images whose descriptors fingerprint a model (release bundling, publishing and their tests)
PROBE_IMAGES = {"corridor_query_0000000": EMBEDDED_DATA / "corridor" / "query" / "0000000.jpg",
                "nordland_winter_20010": EMBEDDED_DATA / "nordland_test" / "winter" / "images-20010.png"}
NORDLAND_TOLERANCE = 1
NORDLAND_SPLITS = {"nordland": None, "nordland_train": (1, 1600), "nordland_val": (1601, 2000),
                   "nordland_test": (2001, 2400)}
ALIGNED_PAIRS = (("queries", "database"), ("query", "ref"))

# builder(root, tolerance or None, pos_radius)
Builder = Callable[[Path, Optional[int], float], VPRDataset]


def _tol(tolerance: Optional[int], default: int) -> int:
    return default if tolerance is None else int(tolerance)


# the embedded copy of one split (registry/data/nordland_test) holds only that split's places
NORDLAND_EMBEDDED = {"nordland_test": "nordland_test"}


def _nordland(name: str) -> Builder:
    places = NORDLAND_SPLITS[name]

    def build(root: Path, tol: Optional[int], rad: float) -> VPRDataset:
        own = None if root.name == NORDLAND_EMBEDDED.get(name) else places  # the embedded split: all its places
        return load_aligned(root, "winter", "summer", _tol(tol, NORDLAND_TOLERANCE), own, name)

    return build


def _route(dataset: VPRDataset) -> VPRDataset:
    """A dataset whose queries and database follow one route in file order (the Corridor: one walk each way)."""
    dataset.route_ordered = True
    return dataset


def _known() -> Dict[str, Tuple[Tuple[str, ...], Builder]]:
    """name -> (folder names tried under each data root, builder)."""
    pitts_dirs = ("pittsburgh", "Pittsburgh", "pitts", "pitts250k", "pitts30k", "Pittsburgh250k")
    msls_dirs = ("msls", "MSLS", "mapillary_sls")
    table: Dict[str, Tuple[Tuple[str, ...], Builder]] = {
        "corridor": (("corridor",), lambda root, tol, rad: _route(load_vprbench(root, name="corridor"))),
        "gardens_point": (
            ("gardens_point_sample", "gardens_point"),
            lambda root, tol, rad: load_aligned(root, "query", "ref", _tol(tol, 0), name="gardens_point"),
        ),
        "tokyo247": (("tokyo247", "Tokyo247"), lambda root, tol, rad: load_tokyo247(root, rad)),
        "msls_val": (msls_dirs, lambda root, tol, rad: load_msls(root, official=True, pos_radius=rad)),
        "msls_val_full": (
            msls_dirs,
            lambda root, tol, rad: load_msls(root, official=False, pos_radius=rad, name="msls_val_full"),
        ),
        "msls_train": (
            msls_dirs,
            lambda root, tol, rad: load_msls(root, training_cities(root), official=False, pos_radius=rad,
                                             name="msls_train"),
        ),
    }
    table.update({name: (("nordland",) + ((NORDLAND_EMBEDDED[name],) if name in NORDLAND_EMBEDDED else ()),
                         _nordland(name)) for name in NORDLAND_SPLITS})
    table.update({n: (pitts_dirs, lambda root, tol, rad, n=n: load_pitts(root, n, rad)) for n in PITTS_NAMES})
    table.update({
        f"tokyotm_{s}": (("tokyoTM", "tokyotm", "TokyoTM"), lambda root, tol, rad, s=s: load_tokyotm(root, s, rad))
        for s in TOKYOTM_SPLITS
    })
    return table


KNOWN_DATASETS = _known()
GENERIC_LAYOUTS = ("utm", "aligned", "vprbench", "netvlad")


def known_datasets() -> List[str]:
    """Dataset names `load_dataset` resolves under a data root."""
    return sorted(KNOWN_DATASETS)


def data_roots(data_root: Optional[PathLike] = None) -> List[Path]:
    """Where known names are looked up: `data_root` then the data embedded in the package; without `data_root`, the
    embedded data then the folder the `VPR_DATA` environment variable names (when set)."""
    if data_root is not None:
        return [Path(data_root).expanduser(), EMBEDDED_DATA]
    env = os.environ.get(DATA_ENV)
    return [EMBEDDED_DATA] + ([Path(env).expanduser()] if env else [])


def _load_mat_file(mat: Path, rad: float) -> VPRDataset:
    mat = require_file(mat, "NetVLAD .mat file")
    root = mat.parent.parent if mat.parent.name == "datasets" else mat.parent
    if mat.stem in PITTS_NAMES:
        return load_pitts(root, mat.stem, rad)
    if mat.stem == "tokyo247":
        return load_tokyo247(root, rad)
    if mat.stem.startswith("tokyoTM_"):
        return load_tokyotm(root, mat.stem[len("tokyoTM_"):], rad)
    return dataset_from_struct(mat.stem, root, read_db_struct(mat), DB_DIRS, Q_DIRS + ("images",), rad)


def _aligned_pair(path: Path) -> Tuple[str, str]:
    for q_dir, db_dir in ALIGNED_PAIRS:
        if (path / q_dir).is_dir() and (path / db_dir).is_dir():
            return q_dir, db_dir
    pairs = " or ".join(f"{q}/ + {d}/" for q, d in ALIGNED_PAIRS)
    raise FileNotFoundError(f"{path} is not an aligned traversal: expected sub-folders {pairs}")


def _single_mat(path: Path) -> Optional[Path]:
    mats = sorted(path.glob("*.mat")) + sorted(path.glob("datasets/*.mat"))
    if len(mats) > 1:
        names = ", ".join(m.name for m in mats)
        raise ValueError(f"{path} holds several .mat files ({names}): name one, e.g. netvlad:{mats[0]}")
    return mats[0] if mats else None


def detect_layout(path: Path) -> str:
    """The layout of a dataset folder (or .mat file); the error lists what each layout looks like."""
    if path.is_file() and path.suffix.lower() == ".mat":
        return "netvlad"
    if (path / "train_val").is_dir():
        return "msls_val"
    if any((path / "images" / s).is_dir() for s in SPLITS):
        return "utm"
    if (path / "queries").is_dir() and (path / "database").is_dir():
        first = next((p for p in (path / "database").rglob("*") if p.is_file()), None)
        return "utm" if first is not None and first.name.startswith("@") else "aligned"
    if (path / "query").is_dir() and (path / "ref").is_dir():
        return "vprbench" if any(path.glob("*.npy")) else "aligned"
    if _single_mat(path) is not None:
        return "netvlad"
    raise ValueError(
        f"cannot tell the layout of {path}. Recognised: images/{{train,val,test}}/{{database,queries}} with "
        "@UTM_east@UTM_north@...@.jpg names (utm); queries/ + database/ with the same file name per place "
        "(aligned); query/ + ref/ + a [q, [refs]] .npy (vprbench); a NetVLAD .mat (netvlad); train_val/<city>/ "
        "(msls_val). Name the layout explicitly as layout:path."
    )


def _load_layout(layout: str, path: Path, tolerance: Optional[int], rad: float) -> VPRDataset:
    if not path.exists():
        raise FileNotFoundError(f"{layout}:{path}: {path} does not exist; check the path")
    if layout in KNOWN_DATASETS:
        return KNOWN_DATASETS[layout][1](path, tolerance, rad)
    if layout == "utm":
        return load_utm_folder(path, pos_radius=rad)
    if layout == "aligned":
        q_dir, db_dir = _aligned_pair(path)
        return load_aligned(path, q_dir, db_dir, _tol(tolerance, 0))
    if layout == "vprbench":
        return load_vprbench(path)
    mat = path if path.suffix.lower() == ".mat" else _single_mat(path)
    if mat is None:
        raise FileNotFoundError(f"no NetVLAD .mat file at {path} or in {path / 'datasets'}")
    return _load_mat_file(mat, rad)


def _split_spec(spec: str) -> Tuple[Optional[str], str]:
    head, sep, tail = spec.partition(":")
    if sep and (head in GENERIC_LAYOUTS or head in KNOWN_DATASETS):
        return head, tail
    return None, spec


def load_dataset(
    spec: str,
    data_root: Optional[PathLike] = None,
    tolerance: Optional[int] = None,
    pos_radius: float = 25.0,
) -> VPRDataset:
    """Load `spec`: a known name (see `known_datasets()`), a folder path, or `layout:path`.

    `tolerance` (places) applies to aligned traversals (default 0; Nordland 1); `pos_radius` (metres)
    defines the positives of UTM datasets.
    """
    layout, rest = _split_spec(spec)
    if layout is not None:
        return _load_layout(layout, Path(rest).expanduser(), tolerance, pos_radius)
    if spec in KNOWN_DATASETS:
        folders, build = KNOWN_DATASETS[spec]
        candidates = [base / folder for base in data_roots(data_root) for folder in folders]
        for root in candidates:
            if root.is_dir():
                return build(root, tolerance, pos_radius)
        looked = ", ".join(str(c) for c in candidates)
        raise FileNotFoundError(
            f"dataset '{spec}' not found; looked in: {looked}. Put it there, pass data_root (--data-root), "
            f"set {DATA_ENV}=/path/to/datasets, or give its folder as {spec}:/path/to/{folders[0]}"
        )
    path = Path(spec).expanduser()
    if path.exists():
        return _load_layout(detect_layout(path), path, tolerance, pos_radius)
    raise ValueError(
        f"'{spec}' is neither a known dataset ({', '.join(known_datasets())}), an existing path, "
        f"nor layout:path with a layout in {', '.join(GENERIC_LAYOUTS)} or a known name"
    )
