"""The float16 vectors file a disk-refined PlaceIndex re-ranks its shortlist from (vectors.f16 beside the index)."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Optional

import numpy as np

from .index_files import IndexFileError

VECTORS = "vectors.f16"  # the float16 copy a disk-refined index re-ranks from


class _VectorFile:
    """Unit vectors as float16 rows in one raw file, appended as the index grows; the copy a disk refine re-ranks
    from (one random row read per candidate). Its sha256 is kept while writing and checked when loaded."""

    def __init__(self, path: Path, dim: int, count: int = 0, owned_dir: Optional[Path] = None) -> None:
        self.path, self.dim, self.count = Path(path), int(dim), int(count)
        self._sha = hashlib.sha256()
        self._map: Optional[np.memmap] = None
        self._owned = owned_dir
        if owned_dir is not None:  # a scratch copy: removed with this object
            weakref.finalize(self, shutil.rmtree, str(owned_dir), True)

    @classmethod
    def scratch(cls, dim: int) -> "_VectorFile":
        folder = Path(tempfile.mkdtemp(prefix="placeindex-vectors-"))
        (folder / VECTORS).touch()
        return cls(folder / VECTORS, dim, owned_dir=folder)

    @classmethod
    def opened(cls, path: Path, dim: int, count: int, sha256: str, verify: bool) -> "_VectorFile":
        """The saved copy, checked: its length, and (verify) its sha256 against places.json and its values finite."""
        if not path.is_file():
            raise IndexFileError(f"{path} is missing: this index re-ranks from it (refine_from='disk'); save the index "
                                 "again from its descriptors")
        want = count * dim * 2
        if path.stat().st_size != want:
            raise IndexFileError(f"{path} holds {path.stat().st_size} bytes, not the {want} of {count} x {dim} float16 "
                                 "rows places.json declares: it was truncated or replaced")
        out = cls(path, dim, count)
        if verify:
            finite = True
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    out._sha.update(block)
                    finite = finite and bool(np.isfinite(np.frombuffer(block, dtype=np.float16)).all())
            if out._sha.hexdigest() != sha256:
                raise IndexFileError(f"{path} does not match the sha256 in places.json: it was modified after saving")
            if not finite:
                raise IndexFileError(f"{path} holds NaN or Inf values, which a save never writes (its rows are unit "
                                     "vectors): the file was modified; save the index again from its descriptors")
        return out

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def writable(self) -> "_VectorFile":
        """self, or a scratch copy when this is a saved file (a saved folder is never modified in place)."""
        if self._owned is not None:
            return self
        out = _VectorFile.scratch(self.dim)
        shutil.copyfile(self.path, out.path)
        out.count, out._sha = self.count, self._sha.copy()
        return out

    def append(self, unit_rows: np.ndarray) -> None:
        data = np.ascontiguousarray(unit_rows, dtype=np.float16).tobytes()
        with open(self.path, "ab") as fh:
            fh.write(data)
        self._sha.update(data)
        self.count += len(unit_rows)
        self._map = None

    def rows(self, ids: np.ndarray) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.float16, mode="r", shape=(self.count, self.dim))
        return np.asarray(self._map[ids], dtype=np.float32)
