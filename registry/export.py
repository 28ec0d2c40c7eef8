"""ONNX export of any registry model (`registry.export_onnx`), checked against PyTorch with onnxruntime.

Command line: `vpr export clusvpr_vgg16 clusvpr.onnx --input-size 480 640 --pretrained DIR`.

The graph takes `images` (N, 3, H, W) float32, normalised as the model's input_config says (ImageNet's mean/std
for a model built with input_norm='imagenet'), and gives `descriptors` (N, D), L2-normalised. The batch axis and
the spatial size are dynamic for every registered model: NetVLAD and GeM pool over any map; ClusVPR's graph
resamples OptLAD's learned GeM exponent map to the input's map (as the PyTorch model does; at the learned size
the resampling is the identity), and its exact KNN is an ONNX TopK over k+1 = 11 tokens. An aggregator whose
graph would be wrong at sizes other than the traced one says so through its `export_size_problem(feature_size)`
hook, and the export is refused (ClusVPR's needs a conv5 map whose 2x2-pooled grid plus its class token holds k+1
tokens: e.g. 6x8 for 96x128 input; 480x640 gives 15x20).

The exporter is torch's TorchScript-based one (`dynamo=False`, opset 17): with torch 2.14 it exports every model
here with dynamic batch and spatial axes; the torch.export-based exporter (`dynamo=True`) specialises ClusVPR's
graph to the traced batch and size (its shape checks become guards), so it is not used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._util.atomic import atomic_path
from ._util.files import unwritable

PathLike = Union[str, os.PathLike]
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "descriptors"
RTOL = 1e-4
GRAPH_SHA256 = "graph_sha256"  # the vpr_runtime field holding graph_sha256(graph), checked on load
RUNTIME_META = "vpr_runtime"  # metadata property: JSON with what registry.load_runtime needs (runtime_meta)
_INSTALL_HINT = ("install the optional extra: pip install 'clusvpr-zoo[onnx]' (onnx and onnxruntime), or use the "
                 "eager PyTorch model (runtime='torch', --runtime torch)")
_log = logging.getLogger(__name__)


def _require(module: str, what: str = "ONNX export"):
    """Import onnx / onnxruntime, or an ImportError naming the extra to install and the fallback runtime."""
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{what} needs the {module} package, which is not installed: {_INSTALL_HINT}") from None


def _check_size(model: nn.Module, height: int, width: int) -> None:
    """The aggregator's own check of the size a graph is traced at: its `export_size_problem(feature_size)` hook
    returns why a graph traced on that feature map would be wrong at other sizes, or None (no hook: any size)."""
    hook = getattr(getattr(model, "aggregator", None), "export_size_problem", None)
    if hook is None:
        return
    stride = getattr(getattr(model, "backbone", None), "stride", 16)
    problem = hook((height // stride, width // stride))
    if problem:
        raise ValueError(f"export_onnx at input {height}x{width} (stride {stride}): {problem}")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max over rows of ||got - expected|| / ||expected|| (descriptors are L2-normalised rows)."""
    got, expected = torch.as_tensor(got).float(), torch.as_tensor(expected).float()
    return float(((got - expected).norm(dim=-1) / expected.norm(dim=-1).clamp_min(1e-12)).max())


def onnx_metadata(model: nn.Module) -> Dict[str, str]:
    """What a deployment needs to feed the graph: architecture, input convention, size, mean/std, output dim."""
    cfg = dict(getattr(model, "input_config", {}) or {})
    config = dict(getattr(model, "config", {}) or {})
    return {
        "architecture": str(config.get("architecture", type(model).__name__)),
        "input_norm": str(config.get("input_norm", "native")),
        "input_size": json.dumps(list(cfg.get("input_size", []))),
        "mean": json.dumps(list(cfg.get("mean", []))),
        "std": json.dumps(list(cfg.get("std", []))),
        "resize": str(cfg.get("resize", "fixed")),
        "descriptor_dim": str(getattr(model, "descriptor_dim", "")),
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W) RGB, (x/255 - mean) / std; dynamic N, H, W",
        "output": f"{OUTPUT_NAME}: float32 (N, descriptor_dim), L2-normalised",
    }


def export_onnx(
    model: nn.Module,
    path: PathLike,
    input_size: Optional[Tuple[int, int]] = None,
    opset: int = OPSET,
    verify: bool = True,
    quantize: Optional[str] = None,
    calibration: Any = None,
    require_vnni: bool = True,
    int8_float_convs: Optional[Sequence[int]] = None,
) -> Path:
    """Write `model` as an ONNX graph with dynamic batch and spatial axes, traced at `input_size` (H, W).

    `input_size` defaults to the model's input_config size. With `verify` (the default), onnxruntime on CPU runs
    the float32 graph at batch 1 and 2 and the result must match PyTorch within 1e-4 relative, else a RuntimeError.

    `quantize="int8"` writes the int8 graph instead (`registry.quantize`: the backbone's convolutions statically
    quantised, calibrated on `calibration` images, a tensor or image files; everything after the backbone float32,
    and the backbone's convolutions `int8_float_convs` too (indices, negative from the end; default
    `registry.quantize.DEFAULT_FLOAT_CONVS`, chosen on the Nordland validation places).
    Its metadata records the calibration and the cosine similarity of its descriptors to float32 on the calibration
    images; a CPU without int8 dot products raises RuntimeUnavailableError unless `require_vnni=False`.
    The graph is written beside `path` and renamed into place once checked: any failure (a full disk, a graph
    that does not match PyTorch) leaves no partial file and an earlier file at `path` unchanged. The file
    carries what `registry.load_runtime` needs to run it.
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None (float32) or 'int8', got {quantize!r}")
    onnx = _require("onnx")
    if quantize:
        _require("onnxruntime")
        from .quantize import calibration_batch, check_int8_cpu

        check_int8_cpu(require=require_vnni)
        calibration = (calibration_batch(calibration, model.input_config), calibration)
    h, w = _input_size(model, input_size)
    _check_size(model, h, w)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: pass the path of the .onnx file to write")
    problem = unwritable(path.parent)
    if problem:  # before the (long) trace
        raise OSError(f"{path} cannot be written: {problem}; pass a path in a folder you can write to")
    # traced, checked and finished in a file beside the target, renamed into place at the end: a failure at any
    # step (a full disk, a graph that does not match PyTorch) leaves no partial file and an earlier file unchanged
    with atomic_path(path) as tmp_path:
        graph = _export_float32(onnx, model, tmp_path, h, w, opset, verify, label=str(path))
        meta = runtime_meta(model, "onnx")
        if quantize:
            graph, meta = _quantized(onnx, model, graph, *calibration, float_convs=int8_float_convs)
        tmp_path.write_bytes(with_meta(onnx, graph, meta))
    return path


def runtime_meta(model: nn.Module, kind: str, calibration: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a saved runtime carries to be run again: its kind, the model's config, input config, descriptor dim, the
    smallest input side it takes and, for int8, the calibration facts (the `vpr_runtime` metadata property)."""
    side = getattr(model, "min_input_side", 1)
    return {"kind": kind, "config": dict(getattr(model, "config", {}) or {}),
            "input_config": dict(getattr(model, "input_config", {}) or {}),
            "descriptor_dim": int(model.descriptor_dim), "min_side": int(side), "calibration": calibration}


def graph_sha256(proto) -> str:
    """sha256 of an ONNX model's graph (nodes, initializers, inputs and outputs) as protobuf serialises it."""
    return hashlib.sha256(proto.graph.SerializeToString()).hexdigest()


def with_meta(onnx, graph: bytes, meta: Dict[str, Any]) -> bytes:
    """`graph` with its `vpr_runtime` metadata property set to `meta` (JSON), which records the sha256 of the graph
    (`graph_sha256`: its nodes and weights as serialised, the metadata aside) that loading checks."""
    proto = onnx.load_from_string(graph)
    meta = {**meta, GRAPH_SHA256: graph_sha256(proto)}
    kept = [p for p in proto.metadata_props if p.key != RUNTIME_META]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=RUNTIME_META, value=json.dumps(meta, sort_keys=True, default=str))
    return proto.SerializeToString()


def _quantized(onnx, model: nn.Module, graph: bytes, batch, given,
               float_convs: Optional[Sequence[int]]) -> Tuple[bytes, Dict[str, Any]]:
    """The int8 graph and its metadata: calibration facts and the cosine similarity to float32 on those images."""
    from .quantize import cosine_to_float32, describe_calibration, quantize_graph

    int8, facts = quantize_graph(graph, batch, float_convs=float_convs)
    ref = _run_graph(graph, batch)
    facts["source"] = describe_calibration(given) or "a tensor of preprocessed images"
    facts["cosine_to_float32_on_calibration"] = cosine_to_float32(ref, _run_graph(int8, batch))
    _log.info("int8: %d convolutions quantised, calibrated on %d images; cosine to float32 %.4f mean, %.4f worst",
              facts["quantised_convs"], facts["num_images"], facts["cosine_to_float32_on_calibration"]["mean"],
              facts["cosine_to_float32_on_calibration"]["min"])
    return int8, runtime_meta(model, "onnx-int8", facts)


def _run_graph(graph: bytes, images: torch.Tensor, batch_size: int = 8):
    import numpy as np

    session = onnx_session(graph)
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: images[i:i + batch_size].numpy()})[0]
                           for i in range(0, len(images), batch_size)])


def _export_float32(onnx, model: nn.Module, path: Path, h: int, w: int, opset: int, verify: bool,
                    label: Optional[str] = None) -> bytes:
    """The float32 graph as bytes (written to `path` on the way), with export_onnx's metadata, checked (errors name
    `label`, default `path`)."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    example = torch.randn(1, 3, h, w, device=param.device if param is not None else "cpu")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript-based exporter is deprecated in favour of dynamo=True, which cannot export ClusVPR
            # with dynamic axes (see the module docstring); its tracer warnings restate the shape checks
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
            )
    finally:
        model.train(was_training)
    graph = onnx.load(str(path))
    for key, value in onnx_metadata(model).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    if verify:
        err = verify_onnx(model, path, [(1, h, w), (2, h, w)], label=label)
        _log.info("onnxruntime matches PyTorch: relative error %.2e", err)
    return path.read_bytes()


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]]) -> Tuple[int, int]:
    """(H, W) to trace at: `input_size`, else the model's; ValueError with the valid range for anything else."""
    from ._util.ranges import BUILDER_RANGES

    size = input_size if input_size is not None else tuple(model.input_config["input_size"][1:])
    lo = int(getattr(model, "min_input_side", 1))
    hi = int(BUILDER_RANGES["input_size"].hi)
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi for v in size))
    if not ok:
        raise ValueError(f"export_onnx: input_size must be (H, W) with H and W integers in {lo}..{hi} for "
                         f"{getattr(model, 'name', type(model).__name__)}, got {input_size!r}")
    return int(size[0]), int(size[1])


def verify_onnx(model: nn.Module, path: PathLike, shapes: Sequence[Tuple[int, int, int]],
                rtol: float = RTOL, seed: int = 0, label: Optional[str] = None) -> float:
    """Largest relative error of onnxruntime (CPU) against PyTorch over random inputs of (N, H, W) shapes; `label`
    names the file in errors (default: `path`)."""
    session = onnx_session(path)
    label = label or str(path)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model_device = next(model.parameters()).device
    for n, h, w in shapes:
        x = torch.randn(n, 3, h, w, generator=g)
        with torch.no_grad():
            expected = model.eval()(x.to(model_device)).float().cpu()
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        if got.shape != expected.shape:
            raise RuntimeError(f"{label}: onnxruntime gave shape {tuple(got.shape)} for input {(n, 3, h, w)}, "
                               f"PyTorch {tuple(expected.shape)}")
        err = relative_error(got, expected)
        if err != err or err > worst:  # a NaN error is kept (max(0.0, nan) would give 0.0)
            worst = err
    if not worst <= rtol:
        raise RuntimeError(f"{label}: onnxruntime differs from PyTorch by {worst:.2e} relative (allowed {rtol:.0e}); "
                           "the export is wrong: report it with the model name and input size")
    return worst


def onnx_session(path: Union[PathLike, bytes], threads: Optional[int] = None):
    """An onnxruntime CPU InferenceSession of a file or graph bytes (`threads` intra-op threads; default:
    onnxruntime's choice)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
