"""onnxruntime on the CPU, float32 or int8: a graph written by `registry.export_onnx`, held in memory.

The graph is self-describing: its metadata property `vpr_runtime` (export.runtime_meta) holds JSON with the runtime
kind, the model's config and input config, the descriptor dim and, for int8, the calibration facts. `save` writes
it atomically; `load_runtime` reads it back (onnx's protobuf parser only: nothing is unpickled).

A graph is checked with the onnx package before onnxruntime sees its bytes (`check_graph`): no tensor may keep its
data outside the file (a runtime file never needs external data, and onnxruntime would read a relative `location`
from the working directory), every op is the standard ONNX set's or onnxruntime's (com.microsoft), the graph takes
`images` (N, 3, H, W) and gives `descriptors` of rank 2 (`encode` checks its width against descriptor_dim where the
graph leaves it symbolic, as the exporter does), and no statically known shape asks for more than
MAX_STATIC_ELEMENTS values. Its metadata is bounded JSON (registry._util.jsonio) whose input size lies in the model's
documented range (1..8192 a side) and within MAX_INPUT_PIXELS. Anything else is a RuntimeFileError naming the file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._util.atomic import atomic_path
from .._util.jsonio import loads_bounded, quote
from .._util.ranges import BUILDER_RANGES
from ..errors import NonFiniteOutputError
from ..export import GRAPH_SHA256, INPUT_NAME, OUTPUT_NAME, RUNTIME_META, _require, export_onnx, graph_sha256
from .base import Runtime, check_images

PathLike = Union[str, os.PathLike]
KINDS = ("onnx", "onnx-int8")
OP_DOMAINS = ("", "ai.onnx", "com.microsoft")  # the standard ONNX ops and onnxruntime's (int8 QDQ uses both)
MAX_STATIC_ELEMENTS = 1 << 26  # 64 Mi values (256 MB of float32): no tensor of a registry model comes near it
MAX_INPUT_PIXELS = 4096 * 4096  # input_size H x W a runtime file may ask images to be resized to
MAX_DESCRIPTOR_DIM = 1 << 21  # an unwhitened NetVLAD of 1024 clusters (num_clusters' most) over 2048 channels
REEXPORT = "re-export the model with `vpr export` (registry.export_onnx) or save it again with a runtime's save()"


class RuntimeFileError(ValueError):
    """A runtime file (.onnx) that is damaged, was not written by registry.export_onnx, or asks for something a
    runtime file never needs (external data, custom ops, giant constants)."""


def default_threads() -> int:
    """As many onnxruntime intra-op threads as PyTorch has (torch.get_num_threads()): runtimes compare fairly."""
    return max(1, torch.get_num_threads())


class OnnxRuntime(Runtime):
    """An onnxruntime CPU session over an exported graph (float32, or int8 QDQ); same `encode` contract as the model.

    Built by `registry.compile_for(model, "onnx" | "onnx-int8", ...)` or `registry.load_runtime(path)`; `threads`
    intra-op threads (default: torch.get_num_threads())."""

    def __init__(self, graph: bytes, threads: Optional[int] = None, label: str = "the graph") -> None:
        onnx = _require("onnx", "runtime 'onnx'")
        try:
            proto = onnx.load_from_string(graph)
        except Exception as err:  # protobuf's DecodeError and the like: not an ONNX file
            raise RuntimeFileError(f"{label} is not an ONNX graph ({type(err).__name__}: {quote(str(err))}): it is "
                                   f"truncated or not a runtime file; {REEXPORT}") from None
        props = {p.key: p.value for p in proto.metadata_props}
        meta = _parse_meta(props.get(RUNTIME_META), label)
        _check_graph_sha256(proto, meta, label)
        check_graph(proto, label, meta["descriptor_dim"])
        super().__init__(meta["input_config"], meta["config"], meta["descriptor_dim"])
        self.kind = str(meta["kind"])
        ort = _require("onnxruntime", f"runtime {self.kind!r}")
        self.meta, self.graph, self.label = meta, graph, label
        self.threads = int(threads or default_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except MemoryError:
            raise
        except Exception as err:  # onnxruntime's InvalidGraph, Fail, ...: a graph it cannot run
            raise RuntimeFileError(f"onnxruntime cannot run {label} ({type(err).__name__}: {quote(str(err), 300)}); "
                                   f"{REEXPORT}") from None

    @property
    def calibration(self) -> Optional[Dict[str, Any]]:
        """int8: how it was calibrated and how close it came to float32 on those images (None for float32)."""
        return self.meta.get("calibration")

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, int(self.meta.get("min_side", 1)))
        if images.shape[0] == 0:
            return torch.zeros((0, self.descriptor_dim), dtype=torch.float32)
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if out.shape != (x.shape[0], self.descriptor_dim):
            raise RuntimeFileError(f"{self.label} gave '{OUTPUT_NAME}' of shape {list(out.shape)} for {x.shape[0]} "
                                   f"images, not ({x.shape[0]}, {self.descriptor_dim}) as its metadata's "
                                   f"descriptor_dim says; {REEXPORT}")
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad).tolist()
            raise NonFiniteOutputError(
                f"{self.label} ({self.kind}) gave NaN or Inf descriptors for {len(rows)} of {len(out)} finite "
                f"images (rows {rows[:8]}{', ...' if len(rows) > 8 else ''}): its weights hold NaN/Inf or overflow; "
                f"{REEXPORT} from good weights")
        return F.normalize(torch.from_numpy(out).float(), dim=-1)

    def save(self, path: PathLike) -> Path:
        """Write the graph and its facts to one `.onnx` file (atomically); `registry.load_runtime(path)` reads it."""
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"save the runtime as a .onnx file, got {path}")
        with atomic_path(path) as tmp:
            tmp.write_bytes(self.graph)
        return path

    def facts(self) -> Dict[str, Any]:
        facts: Dict[str, Any] = {"runtime": self.kind, "threads": self.threads}
        if self.calibration:
            facts["calibration"] = self.calibration
        return facts

    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.graph).digest()


def _parse_meta(text: Optional[str], label: str) -> Dict[str, Any]:
    """The `vpr_runtime` metadata of a graph as bounded JSON, its fields checked for type and range."""
    if text is None:
        raise RuntimeFileError(f"{label} carries no '{RUNTIME_META}' metadata: it was not written by "
                               f"registry.export_onnx or a runtime's save(); {REEXPORT}")
    what = f"the '{RUNTIME_META}' metadata of {label}"
    meta = loads_bounded(text, what, fix=REEXPORT, error=RuntimeFileError)
    missing = sorted({"kind", "config", "input_config", "descriptor_dim"} - set(meta)) if isinstance(meta, dict) \
        else ["a JSON object"]
    if missing:
        raise RuntimeFileError(f"{what} lacks {missing}; {REEXPORT}")
    problems = []
    if meta["kind"] not in KINDS:
        problems.append(f"kind {quote(meta['kind'])} is not one of {', '.join(KINDS)}")
    for key in ("config", "input_config"):
        if not isinstance(meta[key], dict):
            problems.append(f"{key} is {quote(meta[key])}, not an object")
    if not _integer_in(meta["descriptor_dim"], 1, MAX_DESCRIPTOR_DIM):
        problems.append(f"descriptor_dim {quote(meta['descriptor_dim'])} is not an integer in 1..{MAX_DESCRIPTOR_DIM}")
    if not _integer_in(meta.get("min_side", 1), 1, int(BUILDER_RANGES["input_size"].hi)):
        problems.append(f"min_side {quote(meta.get('min_side'))} is not an integer in "
                        f"1..{int(BUILDER_RANGES['input_size'].hi)}")
    if isinstance(meta["input_config"], dict):
        problems += _input_config_problems(meta["input_config"])
    if problems:
        raise RuntimeFileError(f"{what}: {'; '.join(problems)}; {REEXPORT}")
    return meta


def _check_graph_sha256(proto, meta: Dict[str, Any], label: str) -> None:
    """The graph against the sha256 its metadata records: a flipped byte inside a weight or a node attribute keeps
    the graph valid and changes its descriptors, which no structural check sees. A file recording none (not written
    through export.with_meta) is checked structurally only."""
    want = meta.get(GRAPH_SHA256)
    if want is None:
        return
    if not (isinstance(want, str) and len(want) == 64):
        raise RuntimeFileError(f"the '{RUNTIME_META}' metadata of {label}: {GRAPH_SHA256} {quote(want)} is not a "
                               f"64-character hex string; {REEXPORT}")
    if graph_sha256(proto) != want:
        raise RuntimeFileError(f"{label} does not match the {GRAPH_SHA256} its metadata records: its graph (weights "
                               f"or nodes) was modified or damaged after export; {REEXPORT}")


def _integer_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _input_config_problems(cfg: Dict[str, Any]) -> list:
    """What is wrong with a runtime's input config (input_size [3, H, W] in the documented range and pixel budget,
    mean and std three numbers in theirs), before any image is resized to it."""
    problems = []
    size, side = cfg.get("input_size"), BUILDER_RANGES["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and size[0] == 3 and side.accepts(size[1:])):
        problems.append(f"input_size {quote(size)} is not [3, H, W] with H and W {side.describe()}")
    elif size[1] * size[2] > MAX_INPUT_PIXELS:
        problems.append(f"input_size {size[1]}x{size[2]} is {size[1] * size[2]:,} pixels, more than the "
                        f"{MAX_INPUT_PIXELS:,} a runtime may resize images to")
    for key in ("mean", "std"):
        if key in cfg and not BUILDER_RANGES[key].accepts(cfg[key]):
            problems.append(f"{key} {quote(cfg[key])} is not {BUILDER_RANGES[key].describe()}")
    return problems


def _subgraphs(graph):
    """`graph` and every graph nested in its nodes' attributes (If / Loop / Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _subgraphs(attr.g)
            for sub in attr.graphs:
                yield from _subgraphs(sub)


def _tensors(graph):
    """(where, TensorProto) of every tensor a graph stores: initializers, sparse ones and Constant attributes."""
    for t in graph.initializer:
        yield f"initializer {t.name!r}", t
    for sparse in graph.sparse_initializer:
        yield f"sparse initializer {sparse.values.name!r}", sparse.values
        yield f"sparse initializer {sparse.values.name!r}", sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            where = f"attribute {attr.name!r} of node {node.name!r}"
            if attr.HasField("t"):
                yield where, attr.t
            for t in attr.tensors:
                yield where, t
            if attr.HasField("sparse_tensor"):
                yield where, attr.sparse_tensor.values
                yield where, attr.sparse_tensor.indices


def check_graph(proto, label: str, descriptor_dim: int) -> None:
    """RuntimeFileError naming `label` unless the graph is one a runtime file can be: no external data, only the
    standard and onnxruntime op domains and no local functions, `images` (N, 3, H, W) in and `descriptors` of rank 2
    out (of width descriptor_dim where the graph states it), and no statically known shape (ConstantOfShape, Expand,
    Resize sizes) of more than MAX_STATIC_ELEMENTS values."""
    from onnx import TensorProto, numpy_helper

    def refuse(problem: str) -> None:
        raise RuntimeFileError(f"{label} {problem}; {REEXPORT}")

    if len(proto.functions):
        refuse(f"defines {len(proto.functions)} local function(s) ({quote([f.name for f in proto.functions])}): a "
               "runtime file uses ONNX's and onnxruntime's ops only")
    for graph in _subgraphs(proto.graph):
        for where, t in _tensors(graph):
            if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
                location = {e.key: e.value for e in t.external_data}.get("location", "?")
                refuse(f"stores the data of its {where} outside the file (location {quote(location)}): a runtime "
                       "file holds all its data and none is read from elsewhere")
        constants = [(t.name, t) for t in graph.initializer] + [
            (n.output[0], a.t) for n in graph.node if n.op_type == "Constant" and n.output
            for a in n.attribute if a.name == "value" and a.HasField("t")]
        small = {name: numpy_helper.to_array(t) for name, t in constants  # the shapes nodes may ask for
                 if len(t.dims) <= 1 and int(np.prod(t.dims)) <= 16
                 and t.data_type in (TensorProto.INT64, TensorProto.INT32)}
        for node in graph.node:
            if node.domain not in OP_DOMAINS:
                refuse(f"has node {quote(node.name)} of op {quote(node.op_type)} in domain {quote(node.domain)}, "
                       "a custom op (a runtime file uses ONNX's and onnxruntime's ops only)")
            shape_input = {"ConstantOfShape": 0, "Expand": 1, "Resize": 3}.get(node.op_type)
            if shape_input is None or len(node.input) <= shape_input or node.input[shape_input] not in small:
                continue
            dims = small[node.input[shape_input]].astype(np.float64)
            if dims.size and float(np.prod(np.maximum(dims, 1))) > MAX_STATIC_ELEMENTS:
                refuse(f"has a {node.op_type} node {quote(node.name)} of shape {dims.astype(np.int64).tolist()}, "
                       f"more than the {MAX_STATIC_ELEMENTS:,} values any tensor of a registry model holds")
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in proto.graph.output] != [OUTPUT_NAME]:
        refuse(f"takes {[i.name for i in inputs]} and gives {[o.name for o in proto.graph.output]}, not "
               f"['{INPUT_NAME}'] and ['{OUTPUT_NAME}'] as registry.export_onnx writes")
    rank_in = len(inputs[0].type.tensor_type.shape.dim)
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    width = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else descriptor_dim
    if rank_in != 4 or len(dims) != 2 or width != descriptor_dim:  # a symbolic width is checked by encode
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        refuse(f"gives '{OUTPUT_NAME}' of shape {shape} for an input of rank {rank_in}, not (N, {descriptor_dim}) "
               f"for (N, 3, H, W) as its metadata's descriptor_dim says")


def build_onnx(model: nn.Module, quantize: Optional[str] = None, calibration: Any = None,
               threads: Optional[int] = None, input_size=None, require_vnni: bool = True,
               int8_float_convs: Optional[Sequence[int]] = None) -> OnnxRuntime:
    """export_onnx into memory (float32, or int8 calibrated on `calibration`), then its runtime."""
    with tempfile.TemporaryDirectory(prefix="vpr-runtime-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_size=input_size, quantize=quantize,
                           calibration=calibration, require_vnni=require_vnni, int8_float_convs=int8_float_convs)
        return OnnxRuntime(path.read_bytes(), threads=threads)


def load_runtime(path: PathLike, threads: Optional[int] = None) -> OnnxRuntime:
    """The runtime of a `.onnx` file written by `registry.export_onnx` or a runtime's `save` (float32 or int8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no runtime file at {path}: give the .onnx file export_onnx or save() wrote")
    return OnnxRuntime(path.read_bytes(), threads=threads, label=str(path))
