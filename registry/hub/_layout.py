"""The repository layout on disk: config.json, model.safetensors, centroids.h5, pca.h5, README.md.

The writers take any torch module that carries what a VPRModel carries (`config`, `state_dict()`,
`descriptor_dim`, `input_config`, `whitening`, `aggregator.cluster_source`, and optionally `citation` for the
card): the Hub layer reads models, it never imports the model layer.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from .._util import h5io
from .._util.atomic import staged_folder, write_failure
from .._util.files import sha256_file
from ._card import render_model_card

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CENTROIDS = "centroids.h5"
PCA = "pca.h5"
README = "README.md"
LAYOUT_FILES = (CONFIG, WEIGHTS, CENTROIDS, PCA, README)
LIBRARY_NAME = "clusvpr-zoo"
FORMAT_VERSION = 1
# timm pretrained_cfg keys that say where weights come from: meaningless inside the repo that holds them
_SOURCE_KEYS = ("hf_hub_id", "hf_hub_revision", "hf_hub_filename", "url", "file", "source", "tag")
# facts about training and evaluation that travel with a model from pull to push
CARD_FACTS = ("training", "evaluation", "recalls", "release")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_config(model: torch.nn.Module, facts: Mapping[str, Any]) -> Dict[str, Any]:
    """config.json content (without file hashes): timm's keys, the VPR facts, and the card facts."""
    config = copy.deepcopy(dict(getattr(model, "config", {}) or {}))
    if "architecture" not in config:
        raise ValueError(
            f"{type(model).__name__} has no config['architecture']: build the model with registry.create(name) "
            "so the Hub layout can record how to rebuild it"
        )
    config.setdefault("model_args", {})
    config.pop("source", None)  # where this copy was loaded from: meaningless inside the folder that holds it
    cfg = {k: v for k, v in dict(config.get("pretrained_cfg") or {}).items() if k not in _SOURCE_KEYS}
    config["pretrained_cfg"] = cfg
    config["descriptor_dim"] = config["num_features"] = int(model.descriptor_dim)
    config["input_config"] = dict(getattr(model, "input_config", {}) or {})
    whitening = getattr(model, "whitening", None)
    config["whitening"] = {"in_dim": whitening.in_dim, "out_dim": whitening.out_dim, "fitted": whitening.fitted} \
        if whitening is not None else None
    for key in CARD_FACTS:
        if facts.get(key) is not None:
            config[key] = copy.deepcopy(dict(facts[key]))
    config["library_name"] = LIBRARY_NAME
    config["format_version"] = FORMAT_VERSION
    return _jsonable(config)


def _jsonable(obj: Any) -> Any:
    """Tuples to lists, tensors/numpy scalars to numbers, so json.dumps gives timm-readable config."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


# a reduced-precision save keeps these float32: the PCA whitening (dividing by the square roots of small eigenvalues
# amplifies rounding: float16 moved a whitened GeM's Corridor R@1 by a query) and tensors too small to matter in size
_CAST_MIN_NUMEL = 1 << 16
_KEEP_FLOAT32_PREFIXES = ("whitening.",)


def _castable(name: str, tensor: torch.Tensor) -> bool:
    return (tensor.is_floating_point() and tensor.numel() >= _CAST_MIN_NUMEL
            and not name.startswith(_KEEP_FLOAT32_PREFIXES))


def _weights_dtype(dtype: Optional[Union[str, torch.dtype]]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"weights dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def write_layout(
    model: torch.nn.Module,
    directory: Path,
    facts: Mapping[str, Any],
    model_card: Optional[Union[str, os.PathLike]] = None,
    repo_hint: str = "path/to/this/folder",
    dtype: Optional[Union[str, torch.dtype]] = None,
) -> Dict[str, Any]:
    """Write every layout file into an empty `directory`; config.json last, with the sha256 of the others.

    `dtype` (e.g. "float16") stores the floating-point weights at that precision (a smaller download); loading
    casts them back to the model's float32.
    """
    from safetensors.torch import save_file

    config = build_config(model, facts)
    cast = _weights_dtype(dtype)
    tensors = {k: (v.to(cast) if cast is not None and _castable(k, v) else v).detach().to("cpu")
               .contiguous().clone() for k, v in model.state_dict().items()}
    if cast is not None:
        config["weights_dtype"] = str(cast).replace("torch.", "")
        config["weights_dtype_scope"] = (f"tensors of at least {_CAST_MIN_NUMEL} values outside the whitening; "
                                         "the whitening and the small tensors (biases, centres, exponents) float32")
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt", "architecture": config["architecture"]})
    sort_safetensors_metadata(directory / WEIGHTS)
    source = getattr(getattr(model, "aggregator", None), "cluster_source", None)
    if source is not None:
        h5io.save_centroids(directory / CENTROIDS, *source)
    whitening = getattr(model, "whitening", None)
    if whitening is not None and whitening.fitted:
        whitening.to_h5(directory / PCA)
    card = render_model_card(config, model_card, repo_hint, citation=getattr(model, "citation", None))
    (directory / README).write_text(card, encoding="utf-8")
    config["files"] = {
        name: {"sha256": sha256_file(directory / name), "size": (directory / name).stat().st_size}
        for name in LAYOUT_FILES if name != CONFIG and (directory / name).is_file()
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return config


def sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a .safetensors header with its metadata keys sorted, so identical weights give identical bytes.

    safetensors writes `__metadata__` in hash-map order, which differs from one process to the next.
    """
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        raw = fh.read(size)
        header = json.loads(raw, object_pairs_hook=dict)
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # cannot happen for the same keys and values; never write a broken file
            raise ValueError(f"{path}: the sorted safetensors header is longer than the original")
        fh.seek(8)
        fh.write(text + b" " * (size - len(text)))  # safetensors pads headers with spaces


def save_pretrained(
    model: torch.nn.Module,
    save_directory: Union[str, os.PathLike],
    *,
    model_card: Optional[Union[str, os.PathLike]] = None,
    training: Optional[Mapping[str, Any]] = None,
    evaluation: Optional[Mapping[str, Any]] = None,
    recalls: Optional[Mapping[str, Mapping[str, float]]] = None,
    release: Optional[Mapping[str, Any]] = None,
    dtype: Optional[Union[str, torch.dtype]] = None,
) -> Path:
    """Write the Hub layout to `save_directory` atomically: staged in a sibling temp dir, then renamed in place.

    `training` ({"datasets": [...], "recipe": "..."}), `evaluation` ({dataset: {"queries": ..., "resize": ...}})
    and `recalls` ({dataset: {"R@1": 80.1, ...}}, in percent) go into config.json and the model card; a model
    loaded with `from_pretrained` keeps the facts of its repository unless new ones are given. `release`
    ({"trained_on": ..., "not_for": ..., "command": ..., "seed": ..., "git_commit": ...}) describes a released
    model's domain and provenance. `dtype` stores the weights at another precision (e.g. "float16").
    """
    target = Path(save_directory).expanduser()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory: pass a directory path to save_pretrained")
    target.parent.mkdir(parents=True, exist_ok=True)
    facts = card_facts(model, training=training, evaluation=evaluation, recalls=recalls, release=release)
    # one rename for a new folder, else file by file with config.json last (the folder may hold the user's files)
    with staged_folder(target, layout=LAYOUT_FILES, last=CONFIG) as stage:
        try:
            write_layout(model, stage, facts, model_card, dtype=dtype)
        except Exception as err:  # noqa: BLE001  (a write failure is reworded below; anything else re-raised)
            raise _save_failure(err, target) from err
    return target


def _save_failure(err: Exception, target: Path) -> Exception:
    """An OSError naming `target` and what was kept for a write that ran out of room (safetensors reports its I/O
    errors as `... (os error 28)`); `err` itself for any other error."""
    raw = err.__cause__ if getattr(err, "atomic_target", None) is not None else err  # atomic_path's rewording
    code = getattr(raw, "errno", None)
    if code is None:
        found = re.search(r"os error (\d+)", str(raw))
        code = int(found.group(1)) if found else None
    why = write_failure(OSError(code, "")) if code is not None else None
    if why is None:
        return err
    kept = f"the earlier layout in {target} is unchanged" if target.exists() else f"{target} was not created"
    return OSError(code, f"could not save the model to {target}: {why} ({type(raw).__name__}: {raw}); {kept} and "
                         "no partial file is left")


def card_facts(model: torch.nn.Module, **given: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Training/evaluation/recall facts: those given, else those the model carries from its repository."""
    facts = {k: v for k, v in dict(getattr(model, "config", {}) or {}).items() if k in CARD_FACTS}
    facts.update({k: v for k, v in given.items() if v is not None})
    return facts

