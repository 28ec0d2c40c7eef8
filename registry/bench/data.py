"""--datasets entries -> VPRDatasets (all loaded before any model runs), with where each came from and its credit."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from registry.datasets import VPRDataset, load_dataset
from registry.datasets.loader import EMBEDDED_DATA

CREDITS: Dict[str, str] = {
    "corridor": "Milford, 'Vision-based place recognition: how low can you go?', IJRR 2013; copy from VPR-Bench "
                "(Zaffar et al., IJCV 2021, MIT licence)",
    "nordland": "footage by NRK (Creative Commons); Sunderhauf, Neubert, Protzel, 'Are we there yet?', ICRA 2013 "
                "workshop; 64x32 copy from TimQuelch/seqslam",
    "gardens_point": "Gardens Point walking dataset (QUT; Glover et al., Chen et al.), sample via VPR_Tutorial",
    "pitts": "Pittsburgh: Torii et al., 'Visual place recognition with repetitive structures', CVPR 2013",
    "tokyo": "Tokyo 24/7 / TokyoTM: Torii et al. CVPR 2015; Arandjelovic et al. CVPR 2016",
    "msls": "Mapillary SLS: Warburg et al., CVPR 2020",
}


def credit(name: str) -> Optional[str]:
    """The citation for a dataset name (by prefix), if known."""
    return next((text for key, text in CREDITS.items() if name.lower().startswith(key)), None)


def is_embedded(dataset: VPRDataset) -> bool:
    """True for the copy shipped inside the package (registry/data)."""
    return Path(dataset.root).resolve().is_relative_to(EMBEDDED_DATA.resolve())


def load_all(specs: Tuple[str, ...], data_root: Optional[str], tolerance: Optional[int],
             pos_radius: float) -> List[VPRDataset]:
    """Load every dataset; ValueError naming the entry that fails, and unique names for file names."""
    out: List[VPRDataset] = []
    seen: Dict[Tuple[str, Path], str] = {}
    for spec in specs:
        try:
            ds = load_dataset(spec, data_root=data_root, tolerance=tolerance, pos_radius=pos_radius)
        except (FileNotFoundError, ValueError, KeyError, OSError) as err:
            raise ValueError(f"--datasets {spec!r}: {err}") from None
        key = (ds.name, Path(ds.root).resolve())
        if key in seen:
            raise ValueError(f"--datasets {seen[key]!r} and {spec!r} are the same dataset ({ds.name} in {ds.root}): "
                             "list it once")
        seen[key] = spec
        if ds.num_queries == ds.num_queries_without_positives:
            raise ValueError(f"--datasets {spec!r}: no query has a positive, so recall is undefined")
        names = {d.name for d in out}
        if ds.name in names:
            ds.name = f"{ds.name}_{len(out)}"
        out.append(ds)
    return out


def describe(ds: VPRDataset) -> Dict[str, object]:
    """Facts about a dataset for results.json and the Markdown notes."""
    return {
        "name": ds.name,
        "root": str(ds.root),
        "embedded": is_embedded(ds),
        "num_queries": ds.num_queries,
        "num_database": ds.num_db,
        "num_queries_without_positives": ds.num_queries_without_positives,
        "credit": credit(ds.name),
    }
