"""What a map runs on, kept in its folder: the torch model's Hub layout (model/: the map's own copy of the weights,
so a map built from random or local weights opens anywhere) and, for onnx / onnx-int8, the graph (runtime.onnx,
built once at build time; the map then always encodes with that file). Opening checks that the runtime gives the
config hash the map's descriptors were made with."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..datasets.images import open_rgb
from ..evaluation.extract import Preprocess
from ..evaluation.store_extract import model_config_hash
from ..runtimes import Runtime, RuntimeFileError, compile_for, evenly_spaced, load_runtime
from .manifest import MODEL_DIR, RUNTIME_FILE, MapError

MAP_RUNTIMES = ("torch", "onnx", "onnx-int8")
CALIBRATION_IMAGES = 32  # onnx-int8: map images the int8 ranges are calibrated on (evenly spaced)


def pretrained_label(pretrained: Any) -> str:
    """How the manifest records the `pretrained` argument: 'true', 'false' or the repository / folder given."""
    if pretrained is True or pretrained is False:
        return str(pretrained).lower()
    return str(pretrained)


def load_model(folder: Path, name: str, source: str) -> torch.nn.Module:
    """The map's torch model from folder/model (loaded strictly), its `source` set to where the weights came from
    when the map was built (so the config hash does not depend on where the map folder is now)."""
    from .. import create

    try:
        model = create(name, pretrained=str(folder / MODEL_DIR))
    except (OSError, ValueError) as err:
        raise MapError(f"cannot load the map's model {name} from {folder / MODEL_DIR} ({err}); restore the folder or "
                       "rebuild the map with `vpr map build`") from None
    model.config["source"] = source
    return model.eval()


def model_for_build(folder: Path, name: str, pretrained: Any, source: Optional[str]) -> Tuple[torch.nn.Module, str]:
    """(the model, its source label): created and saved into folder/model, then read back from there, so a build and
    every later open use the very same weights; a resumed build (`source`: what it recorded) reuses folder/model."""
    from .. import create

    target = folder / MODEL_DIR
    if source is None or not target.is_dir():
        try:
            model = create(name, pretrained=pretrained)
        except KeyError as err:
            raise MapError(str(err.args[0]) if err.args else f"unknown model {name!r}") from None
        source = str(model.config.get("source") or "random init")
        model.config["source"] = source
        model.save_pretrained(target)
    return load_model(folder, name, source), source


def runtime_for_build(folder: Path, kind: str, model: torch.nn.Module, images: Sequence[str]) -> Runtime:
    """The runtime a new map encodes with: eager torch, or an onnx graph written to folder/runtime.onnx (int8
    calibrated on up to CALIBRATION_IMAGES of the map's own images); a resumed build reuses the file."""
    if kind not in MAP_RUNTIMES:
        raise MapError(f"unknown runtime {kind!r} for a map: choose one of {', '.join(MAP_RUNTIMES)}")
    if kind == "torch":
        return compile_for(model, "torch")
    path = folder / RUNTIME_FILE
    if not path.is_file():
        calibration = evenly_spaced(list(images), CALIBRATION_IMAGES) if kind == "onnx-int8" else None
        compile_for(model, kind, calibration=calibration).save(path)
    return open_runtime(folder, kind, model)


def open_runtime(folder: Path, kind: str, model: Optional[torch.nn.Module]) -> Runtime:
    """The runtime of a built map: torch over `model`, or the graph in folder/runtime.onnx (of the kind recorded)."""
    if kind == "torch":
        if model is None:
            raise MapError(f"the map {folder} runs on torch but no model was loaded")
        return compile_for(model, "torch")
    if kind not in MAP_RUNTIMES:
        raise MapError(f"{folder}: unknown runtime {kind!r} in its manifest; rebuild the map with `vpr map build`")
    try:
        runtime = load_runtime(folder / RUNTIME_FILE)
    except (FileNotFoundError, RuntimeFileError) as err:
        raise MapError(f"{err}; restore {folder / RUNTIME_FILE} or rebuild the map with `vpr map build`") from None
    if runtime.kind != kind:
        raise MapError(f"{folder / RUNTIME_FILE} is a {runtime.kind} graph, the manifest says {kind}; restore the "
                       "file or rebuild the map")
    return runtime


def check_config_hash(folder: Path, runtime: Optional[Runtime], manifest: Dict[str, Any],
                      store_meta: Dict[str, Any]) -> None:
    """MapError naming both models when the runtime (or the store) is not the model the map's descriptors came from:
    a query encoded by another model would be compared with descriptors it never made. Without a runtime only the
    store is checked against the manifest (a runtime checked already)."""
    want = manifest["config_hash"]
    store_hash = store_meta.get("config_hash")
    if store_hash != want:
        raise MapError(f"{folder}: its store holds descriptors of {store_meta.get('model')} (config hash "
                       f"{str(store_hash)[:12]}), its manifest says {manifest['model']} (config hash {want[:12]}): the "
                       "folder mixes two maps; rebuild it with `vpr map build`")
    if runtime is None:
        return
    got = model_config_hash(runtime)
    if got != want:
        raise MapError(f"{folder} holds descriptors of {manifest['model']} ({manifest['runtime']}, config hash "
                       f"{want[:12]}), but the model it would query with is {runtime.name} ({runtime.kind}, config "
                       f"hash {got[:12]}): queries of another model cannot be compared with this map; restore the "
                       "map's model files or rebuild the map with the model you want")


def preprocess(runtime: Runtime, images: Sequence[Any]) -> List[torch.Tensor]:
    """Each image (a path, or a PIL image) as the map's model takes it (decoded within the pixel budget)."""
    from PIL import Image

    pre = Preprocess(runtime.input_config)
    out = []
    for image in images:
        if not isinstance(image, Image.Image):
            image = open_rgb(image)
        out.append(pre(image))
    return out


def encode_tensors(runtime: Runtime, tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """(N, D) float32 descriptors: one runtime call per input size (one call when the model resizes to a fixed
    size), rows in input order."""
    out = np.empty((len(tensors), runtime.descriptor_dim), dtype=np.float32)
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    with torch.inference_mode():
        for rows in groups.values():
            out[rows] = runtime.encode(torch.stack([tensors[i] for i in rows])).cpu().numpy()
    return out
