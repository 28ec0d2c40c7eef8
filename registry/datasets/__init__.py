"""Dataset adapters: every format gives a VPRDataset (database images, query images, positives per query)."""
from .base import VPRDataset, neighbours_within
from .images import ImageListDataset, ImageReadError, open_rgb
from .loader import (
    DEFAULT_DATASET,
    GENERIC_LAYOUTS,
    PROBE_IMAGES,
    data_roots,
    detect_layout,
    known_datasets,
    load_dataset,
)

__all__ = [
    "DEFAULT_DATASET",
    "GENERIC_LAYOUTS",
    "PROBE_IMAGES",
    "ImageListDataset",
    "ImageReadError",
    "VPRDataset",
    "data_roots",
    "detect_layout",
    "known_datasets",
    "load_dataset",
    "neighbours_within",
    "open_rgb",
]
