"""Reader for the NetVLAD `dbStruct` .mat files (Pittsburgh, Tokyo 24/7, TokyoTM).

Facts of the layout (Arandjelovic et al., NetVLAD, CVPR 2016): a MATLAB struct `dbStruct` with
`whichSet`, `dbImageFns` and `qImageFns` (cell arrays of file names relative to the database and query
folders), `utmDb` and `utmQ` (2 x N UTM easting/northing), `numImages`, `numQueries`, `posDistThr`
(25 m), `posDistSqThr`, `nonTrivPosDistSqThr` (100 = 10 m, for training); TokyoTM adds `dbTimeStamp`
and `qTimeStamp`. Some tools rename the fields `dbImage`, `qImage`, `numDb`, `numQ`; both are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import scipy.io

from .base import VPRDataset, neighbours_within, require_file, require_images_exist

_ALIASES = {
    "db_names": ("dbImageFns", "dbImage"),
    "q_names": ("qImageFns", "qImage"),
    "db_utm": ("utmDb",),
    "q_utm": ("utmQ",),
}
_OPTIONAL = {
    "num_db": ("numImages", "numDb"),
    "num_q": ("numQueries", "numQ"),
    "non_triv_sq": ("nonTrivPosDistSqThr",),
    "db_times": ("dbTimeStamp",),
    "q_times": ("qTimeStamp",),
}
_SWAP_SUFFIX = {".jpg": ".png", ".png": ".jpg"}


@dataclass
class DbStruct:
    """The fields of one dbStruct, as numpy arrays and Python lists."""

    path: Path
    db_names: List[str]
    q_names: List[str]
    db_utm: np.ndarray
    q_utm: np.ndarray
    train_pos_radius: float
    db_times: Optional[np.ndarray]
    q_times: Optional[np.ndarray]


def _field(struct, names: Sequence[str], path: Path, required: bool = True):
    for name in names:
        if name in struct._fieldnames:
            return getattr(struct, name)
    if required:
        raise ValueError(
            f"{path}: dbStruct has no field {' or '.join(names)} (fields: {', '.join(struct._fieldnames)}); "
            "is this a NetVLAD dataset .mat file?"
        )
    return None


def _utm(value, n: int, label: str, path: Path) -> np.ndarray:
    arr = np.atleast_2d(np.asarray(value, dtype=np.float64))
    if arr.shape == (2, n):
        return arr.T
    if arr.shape == (n, 2):
        return arr
    raise ValueError(f"{path}: {label} has shape {arr.shape}, expected 2 x {n} UTM coordinates")


def read_db_struct(path: Path) -> DbStruct:
    """Load and check a dbStruct .mat file; errors name the file and the bad field."""
    path = require_file(Path(path), "NetVLAD .mat file")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, NotImplementedError, OSError) as err:
        raise ValueError(f"cannot read {path} as a MATLAB .mat file: {err}") from err
    if "dbStruct" not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        raise ValueError(f"{path} has no variable 'dbStruct' (found: {', '.join(keys) or 'none'})")
    st = mat["dbStruct"]
    f = {key: _field(st, names, path) for key, names in _ALIASES.items()}
    f.update({key: _field(st, names, path, required=False) for key, names in _OPTIONAL.items()})
    db_names = [str(n) for n in np.atleast_1d(f["db_names"]).tolist()]
    q_names = [str(n) for n in np.atleast_1d(f["q_names"]).tolist()]
    for label, names, count in (("database", db_names, f["num_db"]), ("query", q_names, f["num_q"])):
        if count is not None and int(count) != len(names):
            raise ValueError(f"{path}: the {label} count field says {int(count)} images but {len(names)} are listed")
    non_triv = f["non_triv_sq"]
    times = [None if t is None else np.atleast_1d(np.asarray(t)) for t in (f["db_times"], f["q_times"])]
    return DbStruct(
        path=path,
        db_names=db_names,
        q_names=q_names,
        db_utm=_utm(f["db_utm"], len(db_names), "utmDb", path),
        q_utm=_utm(f["q_utm"], len(q_names), "utmQ", path),
        train_pos_radius=10.0 if non_triv is None else float(np.sqrt(float(non_triv))),
        db_times=times[0],
        q_times=times[1],
    )


def resolve_images(names: List[str], bases: Sequence[Path], what: str) -> List[Path]:
    """Find the folder (and .jpg/.png spelling) the names are relative to, from the first name; check all."""
    first = Path(names[0])
    for base in bases:
        if (base / first).is_file():
            paths = [base / n for n in names]
            break
        swapped = _SWAP_SUFFIX.get(first.suffix.lower())
        if swapped and (base / first.with_suffix(swapped)).is_file():
            paths = [(base / n).with_suffix(swapped) for n in names]
            break
    else:
        tried = ", ".join(str(b) for b in bases)
        raise FileNotFoundError(f"{what} image {first} not found under any of: {tried}; check the dataset root")
    require_images_exist(paths, what)
    return paths


def dataset_from_struct(
    name: str,
    root: Path,
    st: DbStruct,
    db_dirs: Sequence[str],
    q_dirs: Sequence[str],
    pos_radius: float,
    query_longer_side: Optional[int] = None,
) -> VPRDataset:
    """Resolve the images and compute positives within `pos_radius` metres (excluding same-time captures)."""
    db_images = resolve_images(st.db_names, [root / d for d in db_dirs], f"{name} database")
    q_images = resolve_images(st.q_names, [root / d for d in q_dirs], f"{name} query")
    near = neighbours_within(st.q_utm, st.db_utm, pos_radius)
    ignore = None
    if st.db_times is not None and st.q_times is not None:
        same = [st.db_times[p] == st.q_times[i] for i, p in enumerate(near)]
        ignore = [p[s] for p, s in zip(near, same)]
        near = [p[~s] for p, s in zip(near, same)]
    return VPRDataset(
        name=name,
        root=root,
        db_images=db_images,
        q_images=q_images,
        positives=near,
        db_coords=st.db_utm,
        q_coords=st.q_utm,
        ignore=ignore,
        query_longer_side=query_longer_side,
        train_pos_radius=st.train_pos_radius,
    )
