"""Tokyo 24/7 (Torii et al. CVPR 2015) and Tokyo Time Machine (NetVLAD) from their dbStruct .mat files."""
from __future__ import annotations

from pathlib import Path

from .base import VPRDataset
from .netvlad_mat import dataset_from_struct, read_db_struct
from .pitts import find_mat

# Tokyo 24/7 protocol: queries resized so that the longer side is 640 pixels
TOKYO247_QUERY_LONGER_SIDE = 640
TOKYO247_DB_DIRS = ("images", "database_gsv_vga", "database", "")
TOKYO247_Q_DIRS = ("query", "queries", "247query_subset_v2", "query/247query_subset_v2", "")
TOKYOTM_SPLITS = ("train", "val")


def load_tokyo247(root: Path, pos_radius: float = 25.0) -> VPRDataset:
    """Tokyo 24/7: `tokyo247.mat`, database under `images/` (or `database_gsv_vga/`), queries under `query/`."""
    root = Path(root)
    st = read_db_struct(find_mat(root, "tokyo247"))
    return dataset_from_struct(
        "tokyo247", root, st, TOKYO247_DB_DIRS, TOKYO247_Q_DIRS, pos_radius, TOKYO247_QUERY_LONGER_SIDE
    )


def load_tokyotm(root: Path, split: str = "val", pos_radius: float = 25.0) -> VPRDataset:
    """TokyoTM `tokyoTM_{split}.mat`; queries and database both under `images/`; same-time captures ignored."""
    if split not in TOKYOTM_SPLITS:
        raise ValueError(f"unknown TokyoTM split {split!r}; choose one of {', '.join(TOKYOTM_SPLITS)}")
    root = Path(root)
    st = read_db_struct(find_mat(root, f"tokyoTM_{split}"))
    return dataset_from_struct(f"tokyotm_{split}", root, st, ("images", ""), ("images", ""), pos_radius)
