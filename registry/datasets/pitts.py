"""Pittsburgh 30k / 250k (Torii et al. CVPR 2013; NetVLAD splits): `pitts{30k,250k}_{train,val,test}.mat`."""
from __future__ import annotations

from pathlib import Path

from .base import VPRDataset
from .netvlad_mat import dataset_from_struct, read_db_struct

PITTS_NAMES = tuple(f"pitts{size}_{split}" for size in ("30k", "250k") for split in ("train", "val", "test"))
# database names look like 000/000000_pitch1_yaw1.jpg; queries use the same scheme in their own folder
DB_DIRS = ("images", "database", "")
Q_DIRS = ("queries_real", "queries", "query")


def find_mat(root: Path, stem: str) -> Path:
    """`root/<stem>.mat` or `root/datasets/<stem>.mat`, with an error listing both places."""
    candidates = [root / f"{stem}.mat", root / "datasets" / f"{stem}.mat"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{stem}.mat not found at {' or '.join(map(str, candidates))}; download the NetVLAD dataset "
        "specification files and put them there"
    )


def load_pitts(root: Path, name: str = "pitts30k_test", pos_radius: float = 25.0) -> VPRDataset:
    """Pittsburgh split `name` with images under `root` (`images/` database, `queries_real/` or `queries/`)."""
    if name not in PITTS_NAMES:
        raise ValueError(f"unknown Pittsburgh split {name!r}; choose one of {', '.join(PITTS_NAMES)}")
    root = Path(root)
    return dataset_from_struct(name, root, read_db_struct(find_mat(root, name)), DB_DIRS, Q_DIRS, pos_radius)
