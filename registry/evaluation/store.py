"""On-disk descriptor store: a memory-mapped .npy filled chunk by chunk, resumable, tied to one model and image list.

Layout of a store folder: `meta.json` (model name, config hash, dim, chunk size, image-list hash), `images.txt`
(one path a line), `descriptors.npy` (N x D float32, memory-mapped) and `chunks.npy` (one byte per chunk, set
after that chunk's rows are flushed). A killed extraction leaves unset bytes, and the next run computes only
those chunks; torchrun ranks each take every world_size-th chunk and write their own rows.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_path
from ..distributed import DistContext
from ..runtimes.base import Runtime
from .extract import extract_descriptors

PathLike = Union[str, os.PathLike]
FORMAT = 1
DEFAULT_CHUNK = 1024


class StoreMismatchError(ValueError):
    """The store folder holds descriptors of another model, input size or image list."""


def model_config_hash(model: nn.Module, resize: Optional[str] = None, longer_side: Optional[int] = None) -> str:
    """sha256 of what fixes a descriptor: the model's config, its input config (size, mean, std) and its weights (a
    `registry.Runtime`: its kind and fingerprint, e.g. the int8 graph)."""
    h = hashlib.sha256()
    facts = {"config": getattr(model, "config", None), "input_config": model.input_config,
             "resize": resize, "longer_side": longer_side}
    h.update(json.dumps(facts, sort_keys=True, default=str).encode())
    if isinstance(model, Runtime):
        h.update(model.kind.encode() + model.fingerprint())
        return h.hexdigest()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _images_hash(images: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(images).encode()).hexdigest()


def _input_size(model: nn.Module) -> str:
    _, h, w = model.input_config["input_size"]
    return f"{h}x{w}"


class DescriptorStore:
    """An opened store: `descriptors` is a read-only memmap (N, D); `complete` once every chunk is written."""

    def __init__(self, folder: PathLike, mode: str = "r") -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a descriptor store (no meta.json)")
        self.meta: Dict[str, Any] = json.loads(meta_path.read_text())
        self.images: List[str] = (self.folder / "images.txt").read_text().splitlines()
        self.descriptors = np.load(self.folder / "descriptors.npy", mmap_mode=mode)
        self._chunks = np.load(self.folder / "chunks.npy", mmap_mode=mode)

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @property
    def num_chunks(self) -> int:
        return len(self._chunks)

    def missing_chunks(self) -> List[int]:
        """Chunks not yet written (all of them in a fresh store)."""
        return [int(i) for i in np.flatnonzero(np.asarray(self._chunks) == 0)]

    @property
    def complete(self) -> bool:
        return not self.missing_chunks()

    def chunk_rows(self, chunk: int) -> slice:
        return slice(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, len(self.images)))

    def write_chunk(self, chunk: int, rows: np.ndarray) -> None:
        """Write one chunk's descriptors, flush them, then mark the chunk done (the order makes a kill harmless)."""
        span = self.chunk_rows(chunk)
        expected = (span.stop - span.start, self.descriptors.shape[1])
        if rows.shape != expected:
            raise ValueError(f"chunk {chunk} of {self.folder} needs descriptors of shape {expected}, got {rows.shape}")
        self.descriptors[span] = rows
        self.descriptors.flush()
        self._chunks[chunk] = 1
        self._chunks.flush()

    def check(self, images: Sequence[str], config_hash: str, what: str) -> None:
        """Refuse this store unless it was made for these images by a model with this config hash."""
        if self.meta.get("config_hash") != config_hash:
            raise StoreMismatchError(
                f"descriptor store {self.folder} was made by {self.meta.get('model')} at input "
                f"{self.meta.get('input_size')} (config hash {str(self.meta.get('config_hash'))[:12]}), not by {what} "
                f"(config hash {config_hash[:12]}): its descriptors cannot be mixed with this model's; pass another "
                "store folder or delete this one")
        if self.meta.get("images_sha256") != _images_hash(images):
            raise StoreMismatchError(
                f"descriptor store {self.folder} holds {len(self.images)} other images than the {len(images)} asked "
                f"for (first: {self.images[:1]} vs {list(images[:1])}): pass another store folder or delete this one")


def create_store(folder: PathLike, images: Sequence[str], dim: int, config_hash: str, chunk_size: int = DEFAULT_CHUNK,
                 **facts: Any) -> DescriptorStore:
    """A new empty store for `images` (N x dim float32 on disk, nothing in RAM); meta.json is written last."""
    folder = Path(folder)
    if (folder / "meta.json").exists():
        raise FileExistsError(f"{folder} already holds a descriptor store")
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images)
    np.lib.format.open_memmap(folder / "descriptors.npy", mode="w+", dtype=np.float32, shape=(n, dim)).flush()
    np.save(folder / "chunks.npy", np.zeros(-(-n // chunk_size), dtype=np.uint8))
    (folder / "images.txt").write_text("".join(f"{p}\n" for p in images))
    meta = {"format": FORMAT, "count": n, "dim": dim, "chunk_size": chunk_size, "config_hash": config_hash,
            "images_sha256": _images_hash(images), **facts}
    with atomic_path(folder / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return DescriptorStore(folder, mode="r+")


def open_store(folder: PathLike, images: Optional[Sequence[str]] = None, config_hash: Optional[str] = None,
               what: str = "this model") -> DescriptorStore:
    """A store opened read-only, checked against `images` and `config_hash` when given."""
    store = DescriptorStore(folder)
    if images is not None and config_hash is not None:
        store.check([str(p) for p in images], config_hash, what)
    return store


def extract_to_store(
    model: nn.Module,
    images: Sequence[PathLike],
    folder: PathLike,
    chunk_size: int = DEFAULT_CHUNK,
    ctx: Optional[Any] = None,
    resize: Optional[str] = None,
    longer_side: Optional[int] = None,
    progress: bool = True,
    **extract_kwargs: Any,
) -> DescriptorStore:
    """Descriptors of `images` streamed into the store at `folder`, one chunk in memory at a time; resumes a killed run.

    A store made by another model, input size or image list is refused (StoreMismatchError). Under torchrun pass
    `ctx` (registry.training.init_distributed()): rank r computes chunks r, r + world_size, ...
    """
    ctx = ctx or DistContext()
    images = [str(p) for p in images]
    if not images:
        raise ValueError("no images to extract descriptors from")
    config_hash = model_config_hash(model, resize, longer_side)
    name = getattr(model, "name", type(model).__name__)
    what = f"{name} at input {_input_size(model)}"
    folder = Path(folder)
    if ctx.is_main and not (folder / "meta.json").exists():
        dim = int(getattr(model, "descriptor_dim", 0)) or _probe_dim(model, images[0], resize, longer_side)
        create_store(folder, images, dim, config_hash, chunk_size, model=name, input_size=_input_size(model))
    ctx.barrier()
    store = DescriptorStore(folder, mode="r+")
    store.check(images, config_hash, what)
    todo = [c for c in store.missing_chunks() if c % ctx.world_size == ctx.rank]
    for n, chunk in enumerate(todo):
        span = store.chunk_rows(chunk)
        rows = extract_descriptors(model, images[span], resize=resize, longer_side=longer_side,
                                   progress=progress and ctx.is_main,
                                   desc=f"{folder.name} chunk {n + 1}/{len(todo)}", **extract_kwargs)
        store.write_chunk(chunk, rows)
    ctx.barrier()
    return open_store(folder)


def _probe_dim(model: nn.Module, image: str, resize: Optional[str], longer_side: Optional[int]) -> int:
    with torch.inference_mode():
        return int(extract_descriptors(model, [image], resize=resize, longer_side=longer_side, progress=False).shape[1])


def extract_dataset_to_store(model: nn.Module, dataset: Any, folder: PathLike, **kwargs: Any):
    """(query, database) stores under `folder`/queries and `folder`/database, like extract_dataset, resumable."""
    q_kwargs = dict(kwargs)
    if dataset.query_longer_side is not None:
        q_kwargs.update(resize="longer_side", longer_side=dataset.query_longer_side)
    folder = Path(folder)
    db = extract_to_store(model, dataset.db_images, folder / "database", **kwargs)
    q = extract_to_store(model, dataset.q_images, folder / "queries", **q_kwargs)
    return q, db
