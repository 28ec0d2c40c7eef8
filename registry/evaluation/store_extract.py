"""Filling a map store: descriptors of an image list extracted one committed chunk at a time (a rerun resumes after
the last commit), the store refused when another model, input size or image list made it. Under torchrun each rank
writes the fragments of its chunks and rank 0 commits each round's fragments at once."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._util.distributed import DistContext
from ..runtimes.base import Runtime
from .extract import extract_descriptors
from .store import (
    DEFAULT_CHUNK,
    INT_PLACES,
    MAX_CHUNKS,
    MapStore,
    _commit,
    _create,
    _images_hash,
    _lance,
    _write_fragments,
)
from .store_damage import committed

PathLike = Union[str, os.PathLike]


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


def _input_size(model: nn.Module) -> str:
    _, h, w = model.input_config["input_size"]
    return f"{h}x{w}"


def extract_to_store(
    model: nn.Module,
    images: Sequence[PathLike],
    folder: PathLike,
    chunk_size: int = DEFAULT_CHUNK,
    ctx: Optional[Any] = None,
    resize: Optional[str] = None,
    longer_side: Optional[int] = None,
    progress: bool = True,
    places: Optional[Sequence[Any]] = None,
    coords: Optional[Any] = None,
    **extract_kwargs: Any,
) -> MapStore:
    """Descriptors of `images` written to the map store at `folder` one committed chunk at a time (one chunk in
    memory); a rerun resumes after the last commit. `places` (ids: integers come back as ints, anything else as
    strings) and `coords` ((N, 2)) are stored with the rows.

    A store made by another model, input size or image list is refused (StoreMismatchError), also when two writers
    start at once. A failed write (a full disk) raises an OSError naming the folder; what was committed stays. Under
    torchrun pass `ctx` (registry.training.init_distributed()): rank r computes chunks r, r + world_size, ... and
    writes their fragments; rank 0 commits each round's fragments in one commit.
    """
    _lance()  # a missing engine is named before any work
    ctx = ctx or DistContext()
    images = [str(p) for p in images]
    coords = _checked_extras(images, chunk_size, places, coords)
    config_hash = model_config_hash(model, resize, longer_side)
    name = getattr(model, "name", type(model).__name__)
    folder = Path(folder)
    if ctx.is_main and not committed(folder):
        dim = int(getattr(model, "descriptor_dim", 0)) or _probe_dim(model, images[0], resize, longer_side)
        folder.parent.mkdir(parents=True, exist_ok=True)
        _create(folder, dim, len(images), {"model": name, "input_size": _input_size(model), "config_hash": config_hash,
                                           "images_sha256": _images_hash(images), "chunk_size": chunk_size,
                                           "coords": coords is not None, "place_type": _place_type(places),
                                           "resize": resize, "longer_side": longer_side})
    ctx.barrier()
    store = MapStore(folder, expected_count=len(images))
    store.check(images, config_hash, f"{name} at input {_input_size(model)}")
    encode = dict(resize=resize, longer_side=longer_side, progress=progress and ctx.is_main, **extract_kwargs)
    _fill(model, store, images, places, coords, ctx, encode)
    return MapStore(folder)


def _checked_extras(images: List[str], chunk_size: int, places: Optional[Sequence[Any]],
                    coords: Optional[Any]) -> Optional[np.ndarray]:
    """The arguments of extract_to_store checked; the coordinates as an (N, 2) float64 array (or None)."""
    if not images:
        raise ValueError("no images to extract descriptors from")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if -(-len(images) // chunk_size) > MAX_CHUNKS:
        raise ValueError(f"chunk_size {chunk_size} cuts {len(images):,} images into more than {MAX_CHUNKS:,} chunks, "
                         "the most a store may have: pass a larger chunk_size")
    for name, extra in (("places", places), ("coords", coords)):
        if extra is not None and len(extra) != len(images):
            raise ValueError(f"{len(extra)} {name} for {len(images)} images")
    return None if coords is None else np.asarray(coords, dtype=np.float64).reshape(len(images), 2)


def _place_type(places: Optional[Sequence[Any]]) -> Optional[str]:
    """INT_PLACES when every place id is an integer (bools are not), else None: the ids are stored as strings."""
    if places is None or not len(places):
        return None
    ints = all(isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_)) for p in places)
    return INT_PLACES if ints else None


def _fill(model: nn.Module, store: MapStore, images: List[str], places: Optional[Sequence[Any]],
          coords: Optional[np.ndarray], ctx: DistContext, encode: dict) -> None:
    """Extract and commit the store's missing chunks: rank r takes every world_size-th one; one commit per round."""
    folder = store.folder
    todo = store.missing_chunks()
    mine = [c for i, c in enumerate(todo) if i % ctx.world_size == ctx.rank]
    rounds = -(-len(todo) // ctx.world_size)
    for n in range(rounds):
        fragments = []
        if n < len(mine):
            chunk = mine[n]
            span = slice(chunk * store.chunk_size, min((chunk + 1) * store.chunk_size, store.count))
            rows = extract_descriptors(model, images[span], desc=f"{folder.name} chunk {n + 1}/{len(mine)}", **encode)
            fragments = _write_fragments(folder, store.dim, store.meta, np.arange(span.start, span.stop),
                                         images[span], rows, None if places is None else places[span],
                                         None if coords is None else coords[span])
        if ctx.distributed:
            fragments = _gather_fragments(ctx, fragments)
        if ctx.is_main:
            _commit(folder, fragments)
        ctx.barrier()


def _gather_fragments(ctx: DistContext, fragments: list) -> list:
    """Every rank's fragment metadata on rank 0 (JSON through torch.distributed's object gather)."""
    import torch.distributed as dist
    from lance.fragment import FragmentMetadata

    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, [json.dumps(f.to_json()) for f in fragments])
    return [FragmentMetadata.from_json(f) for part in out for f in part]


def _probe_dim(model: nn.Module, image: str, resize: Optional[str], longer_side: Optional[int]) -> int:
    with torch.inference_mode():
        return int(extract_descriptors(model, [image], resize=resize, longer_side=longer_side, progress=False).shape[1])


def extract_dataset_to_store(model: nn.Module, dataset: Any, folder: PathLike, **kwargs: Any) -> Tuple[MapStore,
                                                                                                        MapStore]:
    """(query, database) stores under `folder`/queries and `folder`/database, like extract_dataset, resumable."""
    q_kwargs = dict(kwargs)
    if dataset.query_longer_side is not None:
        q_kwargs.update(resize="longer_side", longer_side=dataset.query_longer_side)
    folder = Path(folder)
    db = extract_to_store(model, dataset.db_images, folder / "database", **kwargs)
    q = extract_to_store(model, dataset.q_images, folder / "queries", **q_kwargs)
    return q, db
